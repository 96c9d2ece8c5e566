"""LocalGenerator: a local Hugging Face causal LM as a `types.ChatGenerator`.

It decodes by hand instead of calling `model.generate` so that the batching
behaviour is explicit and testable: left padding, position ids derived from the
attention mask, one forward pass per step for the whole batch with the KV cache,
and a seeded torch.Generator so that the same seed gives the same text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from classifiers.ml.device import pick_device
from classifiers.ml.generation.sampling import (
    CHAT_END_TOKENS,
    GeneratorError,
    SamplingConfig,
    sample_next_token,
)
from classifiers.ml.types import Message

# ---------------------------------------------------------------------------
# Local model


class LocalGenerator:
    """Batched sampling from a local causal LM with a chat template."""

    # A trailing assistant message is a prefill that the reply continues (Stage I
    # opens the reply with a list number, so a small model writes the next item).
    continues_replies = True

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        name: str | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, batch_size)
        self.name = (
            name or f"local:{getattr(model.config, 'name_or_path', '') or 'model'}"
        )
        self.stop_ids = self._stop_token_ids()
        self.pad_id = self._pad_token_id()

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 8,
    ) -> LocalGenerator:
        """Load a model + tokenizer from a local directory (never from a hub)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise GeneratorError(
                f"no Hugging Face model in {model_dir} (no config.json)"
            )
        resolved = pick_device(device)
        if dtype is None:
            # bf16 halves memory and is fast on GPUs; CPUs are faster and exact in fp32.
            dtype = torch.bfloat16 if resolved.type == "cuda" else torch.float32
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, local_files_only=True
        )
        return cls(
            model,
            tokenizer,
            device=resolved,
            batch_size=batch_size,
            name=f"local:{model_dir.name}",
        )

    # -- token bookkeeping -------------------------------------------------

    def _stop_token_ids(self) -> set[int]:
        ids: set[int] = set()
        candidates: list[Any] = [self.tokenizer.eos_token_id]
        gen_cfg = getattr(self.model, "generation_config", None)
        if gen_cfg is not None:
            candidates.append(getattr(gen_cfg, "eos_token_id", None))
        for cand in candidates:
            if isinstance(cand, int):
                ids.add(cand)
            elif isinstance(cand, (list, tuple)):
                ids.update(int(c) for c in cand)
        vocab = self.tokenizer.get_vocab()
        for token in CHAT_END_TOKENS:
            if token in vocab:
                ids.add(int(vocab[token]))
        return ids

    def _pad_token_id(self) -> int:
        for cand in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if isinstance(cand, int):
                return cand
        return min(self.stop_ids) if self.stop_ids else 0

    def encode_conversation(self, conversation: list[Message]) -> list[int]:
        prefill = bool(conversation) and conversation[-1]["role"] == "assistant"
        text = self.tokenizer.apply_chat_template(
            conversation,
            add_generation_prompt=not prefill,
            continue_final_message=prefill,
            tokenize=False,
        )
        # The chat template already contains any BOS it wants.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- generation --------------------------------------------------------

    def chat(
        self,
        conversations: list[list[Message]],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        if not conversations:
            return []
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
        sampling = SamplingConfig(temperature=temperature, top_p=top_p)
        prompts = [self.encode_conversation(c) for c in conversations]
        # Batch prompts of similar length together so little compute goes to padding;
        # the stable sort keeps the order (and so the sampling) deterministic.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        replies: list[str] = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            token_lists = self.generate_ids(
                [prompts[i] for i in chunk], max_new_tokens, sampling, generator
            )
            for i, ids in zip(chunk, token_lists, strict=True):
                replies[i] = self.tokenizer.decode(
                    ids, skip_special_tokens=True
                ).strip()
        return replies

    @torch.inference_mode()
    def generate_ids(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        sampling: SamplingConfig,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """Decode a batch of tokenised prompts; returns the new ids without stop ids."""
        batch_size = len(prompts)
        longest = max(len(p) for p in prompts)
        # Left padding keeps every row's last real token in the last column, so one
        # logits slice serves the whole batch and new tokens append uniformly.
        input_ids = torch.full((batch_size, longest), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, longest), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, longest - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, longest - len(ids) :] = 1
        input_ids = input_ids.to(self.device)  # (B, T)
        attention_mask = attention_mask.to(self.device)  # (B, T)
        # Positions count real tokens only, so a padded row sees the same positions
        # as it would alone; this is what makes batched == unbatched.
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)

        stop_ids = torch.tensor(
            sorted(self.stop_ids), dtype=torch.long, device=self.device
        )
        finished = torch.zeros(batch_size, dtype=torch.bool, device=self.device)  # (B,)
        generated: list[torch.Tensor] = []
        past_key_values = None
        step_ids = input_ids
        for _ in range(max_new_tokens):
            out = self.model(
                input_ids=step_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=True,
                logits_to_keep=1,
            )
            past_key_values = out.past_key_values
            logits = out.logits[:, -1, :]  # (B, V)
            next_ids = sample_next_token(logits, sampling, generator)  # (B,)
            # Rows that already stopped keep feeding pad; their output is discarded.
            next_ids = torch.where(
                finished, torch.full_like(next_ids, self.pad_id), next_ids
            )
            generated.append(next_ids)
            if stop_ids.numel():
                finished |= torch.isin(next_ids, stop_ids)
            if bool(finished.all()):
                break
            step_ids = next_ids.unsqueeze(-1)  # (B, 1)
            attention_mask = torch.cat(
                [attention_mask, attention_mask.new_ones((batch_size, 1))], dim=-1
            )  # (B, T+1)
            position_ids = position_ids[:, -1:] + 1  # (B, 1)

        if not generated:
            return [[] for _ in prompts]
        new_tokens = torch.stack(generated, dim=-1).tolist()  # (B, N)
        results: list[list[int]] = []
        for row in new_tokens:
            kept: list[int] = []
            for tok in row:
                if tok in self.stop_ids:
                    break
                kept.append(tok)
            results.append(kept)
        return results
