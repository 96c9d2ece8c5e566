"""A scalar value head on a causal LM (after TRL's ValueHead; local copy, no trl).

The streaming output classifier is this head reading the generator's own hidden
states: one linear layer per token that predicts "is the FULL response harmful?"
from the prefix seen so far. Because it reads the hidden states of the very forward
that produces the next-token logits, guarding a generation costs almost nothing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

HEAD_PREFIX = "v_head."  # key prefix of the head's tensors in a state dict / file


class ValueHead(nn.Module):
    """Linear probe over (possibly several concatenated) hidden states -> one logit."""

    def __init__(self, hidden_size: int, n_layers_in: int = 1, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.summary = nn.Linear(hidden_size * n_layers_in, 1)  # fp32 by default

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # Upcast: the backbone may run in bf16, but a probe's logit is sensitive to
        # rounding and the head is tiny, so it always computes in its own fp32.
        # Autocast (full-mode training on a GPU) would run this Linear in bf16 too.
        with torch.autocast(hidden.device.type, enabled=False):
            hidden = hidden.to(self.summary.weight.dtype)  # (B, T, H*n)
            return self.summary(self.dropout(hidden)).squeeze(-1)  # (B, T)


def resolve_hidden_size(config: Any) -> int:
    """The backbone's hidden width, looked up in TRL's order.

    Some architectures project embeddings to a different width (OPT's
    word_embed_proj_dim), most expose hidden_size, and multimodal wrappers keep it
    on their text_config; the first one present wins.
    """
    if getattr(config, "word_embed_proj_dim", None):
        return int(config.word_embed_proj_dim)
    if getattr(config, "hidden_size", None):
        return int(config.hidden_size)
    text_config = getattr(config, "text_config", None)
    if text_config is not None and getattr(text_config, "hidden_size", None):
        return int(text_config.hidden_size)
    raise ValueError(
        "cannot find the hidden size: config has none of word_embed_proj_dim, "
        "hidden_size, text_config.hidden_size"
    )


@dataclass
class ValueHeadOutput:
    logits_lm: torch.Tensor | None  # (B, T', V) next-token logits; None if skipped
    values: torch.Tensor  # (B, T) head logits (pre-sigmoid), fp32
    past_key_values: Any  # the KV cache when use_cache, else None
    hidden: torch.Tensor  # (B, T, H*n) the features the head read


class CausalLMWithValueHead(nn.Module):
    """A transformers causal LM plus a ValueHead on selected hidden_states.

    `layers` index the model's `hidden_states` tuple: 0 is the embedding output, i
    the output of decoder layer i, -1 the last one (after the final norm). Several
    layers are concatenated along the feature axis.
    """

    def __init__(
        self, lm: nn.Module, layers: tuple[int, ...] = (-1,), dropout: float = 0.0
    ):
        super().__init__()
        if not layers:
            raise ValueError("layers must name at least one hidden state")
        self.lm = lm
        self.layers = tuple(int(i) for i in layers)
        self.hidden_size = resolve_hidden_size(lm.config)
        self.v_head = ValueHead(self.hidden_size, len(self.layers), dropout)
        # Keep the head on the backbone's device but in fp32 (see ValueHead.forward).
        device = next(lm.parameters()).device
        self.v_head.to(device=device, dtype=torch.float32)

    @property
    def config(self) -> Any:
        return self.lm.config

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def select_hidden(self, hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Concatenate the chosen layers' hidden states: (B, T, H*n)."""
        chosen = [hidden_states[i] for i in self.layers]
        return chosen[0] if len(chosen) == 1 else torch.cat(chosen, dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
        *,
        logits_to_keep: int = 0,
        compute_lm_logits: bool = True,
    ) -> ValueHeadOutput:
        """Run the LM once and the head on the same forward's hidden states.

        `logits_to_keep=1` computes LM logits for the last position only (what
        generation needs); `compute_lm_logits=False` skips the LM head entirely
        (the pure-classifier path), saving a (H x vocab) matmul per token.
        """
        kwargs: dict[str, Any] = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=True,
        )
        if compute_lm_logits:
            out = self.lm(**kwargs, logits_to_keep=logits_to_keep)
            logits_lm = out.logits  # (B, T', V)
        else:
            out = self.lm.base_model(**kwargs)
            logits_lm = None
        hidden = self.select_hidden(out.hidden_states)  # (B, T, H*n)
        values = self.v_head(hidden)  # (B, T)
        return ValueHeadOutput(
            logits_lm=logits_lm,
            values=values,
            past_key_values=out.past_key_values if use_cache else None,
            hidden=hidden,
        )

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """The head's weights alone, keys prefixed with `v_head.`, on CPU."""
        return {
            HEAD_PREFIX + k: v.detach().cpu().contiguous()
            for k, v in self.v_head.state_dict().items()
        }

    def load_head_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load head weights saved by `head_state_dict` (prefix optional)."""
        stripped = {k.removeprefix(HEAD_PREFIX): v for k, v in state.items()}
        self.v_head.load_state_dict(stripped)


# ----------------------------------------------------------------------------- LoRA
# A minimal local LoRA (the "lora" training mode): one artifact format whether or
# not `peft` is installed, and nothing to keep in sync with peft's module names.


class LoRALinear(nn.Module):
    """y = W x + (alpha / r) * B A x, with W frozen and B initialised to zero (so
    training starts from exactly the unmodified backbone)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        base.requires_grad_(False)
        device = base.weight.device
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=device))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low_rank = x.to(self.lora_a.dtype) @ self.lora_a.T  # (..., r)
        delta = (low_rank @ self.lora_b.T) * self.scale  # (..., out)
        return self.base(x) + delta.to(x.dtype)


def apply_lora(
    lm: nn.Module,
    rank: int,
    alpha: float,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
) -> int:
    """Freeze `lm`, wrap each nn.Linear named in `targets`; return how many."""
    lm.requires_grad_(False)
    replaced = 0
    for module in list(lm.modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, rank, alpha))
                replaced += 1
    return replaced


def lora_state_dict(lm: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights (what a LoRA artifact stores besides the head)."""
    return {k: v for k, v in lm.state_dict().items() if ".lora_" in k}
