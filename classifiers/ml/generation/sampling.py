"""Sampling and shared bits of the chat generators.

`sample_next_token` picks one token per row (greedy at temperature 0, else
temperature + nucleus), used by LocalGenerator's batched decoding;
CHAT_END_TOKENS are the end-of-turn tokens of common chat templates, and
GeneratorError is the one-line error a backend raises for the user to fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Tokens that end an assistant turn in common chat templates, besides eos_token_id.
CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


class GeneratorError(RuntimeError):
    """A generator backend failed in a way the user has to fix (one-line message)."""


# ---------------------------------------------------------------------------
# Sampling


@dataclass
class SamplingConfig:
    temperature: float = 0.0  # 0 = greedy (argmax); >0 divides the logits
    top_p: float = 1.0  # nucleus: keep the smallest set of tokens with mass >= top_p


def sample_next_token(
    logits: torch.Tensor,  # (B, V) logits of the last position
    sampling: SamplingConfig,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Pick one token per row: greedy at temperature 0, else temperature + top-p."""
    if sampling.temperature <= 0:
        return logits.argmax(dim=-1)  # (B,)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)  # (B, V)
    if sampling.top_p < 1.0:
        sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)  # (B, V)
        cumulative = sorted_probs.cumsum(dim=-1)  # (B, V)
        # Drop a token when the mass *before* it already reaches top_p; this always
        # keeps the most likely token, so a row can never end up all-zero.
        drop = (cumulative - sorted_probs) >= sampling.top_p  # (B, V)
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, sorted_idx, sorted_probs)  # (B, V)
    probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
