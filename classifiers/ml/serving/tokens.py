"""One generated token: its TokenScore record, text decoding, sampling, EOS ids.

`TokenScore.prob` / `.score` / `.halted` are filled by output/scoring.py's rule.
`sample_token` is the per-stream sampler (greedy under temperature 1e-5, else
nucleus on CPU with the stream's seeded generator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class TokenScore:
    index: int  # position of the token in the response (0-based)
    token_id: int
    prob: float  # the head's raw probability at this token (NaN when unguarded)
    score: float  # aggregated score the guard halts on (cummax or EMA)
    text: str = ""  # text this token adds (generation only; "" mid-character)
    halted: bool = False  # generation stopped here because score >= threshold
    heavy: float | None = None  # a probe cascade's heavy classifier, once escalated


# -------------------------------------------------------------- decoding, sampling


class IncrementalDecoder:
    """Text deltas for a growing token list, correct across multi-byte characters
    and tokenizers whose decode depends on neighbours (TGI's prefix/read offsets)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        prefix = decode(
            self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True
        )
        full = decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        # U+FFFD at the end = an incomplete UTF-8 sequence: wait for the next token.
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return full[len(prefix) :]
        return ""


def sample_token(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
) -> int:
    """Greedy at temperature 0, else nucleus sampling (on CPU, for a seedable RNG).
    A temperature under 1e-5 is greedy too: it is the limit, and dividing by it
    would overflow the softmax into NaNs."""
    if temperature < 1e-5:
        return int(logits.argmax(-1))
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)  # (V,)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p >= top_p  # mass before it covers p
        sorted_p[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))


def eos_ids(tokenizer: Any, lm: Any) -> set[int]:
    ids: set[int] = set()
    for source in (
        tokenizer.eos_token_id,
        getattr(getattr(lm, "generation_config", None), "eos_token_id", None),
    ):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    return ids
