"""Losses of the output classifier (after Constitutional Classifiers).

`running_max_loss` anneals from per-prefix BCE to BCE on the cumulative maximum
(the quantity the guard halts on, see output/scoring.py), and `window_loss` is the
softmax-weighted sliding-window variant served as an EMA. `ntp_loss` is the
next-token regulariser for a trained backbone; `classifier_loss` picks by config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from classifiers.ml.output.model import OutputClassifierConfig
from classifiers.ml.output.scoring import token_probs

PROB_EPS = 1e-6  # probability clamp before log(); keeps BCE finite in fp32


# ----------------------------------------------------------------------------- losses


def _bce_on_probs(
    probs: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean over sequences of the mean BCE over masked tokens (each response counts
    once, so long responses do not dominate the batch)."""
    probs = probs.clamp(PROB_EPS, 1 - PROB_EPS)  # (B, T)
    y = labels.to(probs.dtype).unsqueeze(1)  # (B, 1)
    bce = -(y * probs.log() + (1 - y) * (1 - probs).log())  # (B, T)
    m = mask.to(probs.dtype)
    per_seq = (bce * m).sum(1) / m.sum(1).clamp_min(1)  # (B,)
    has_tokens = m.sum(1) > 0
    return per_seq[has_tokens].mean() if has_tokens.any() else bce.sum() * 0


def running_max_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    response_mask: torch.Tensor,
    progress: float,
) -> torch.Tensor:
    """BCE of each response prefix's prediction against the full-sequence label.

    The prediction is p'_t = (1 - progress) * p_t + progress * cummax(p)_t. Early in
    training (progress 0) every prefix gets its own gradient; by the end it trains
    exactly the cumulative max the guard halts on, so a benign response is not
    punished for one early spike less than a harmful one is rewarded for it.
    """
    probs = token_probs(logits.float())  # (B, T)
    mask = response_mask.bool()
    # Zero outside the response so the running max starts fresh at its first token.
    masked = probs * mask  # (B, T)
    running = torch.cummax(masked, dim=1).values  # (B, T)
    mixed = (1 - progress) * probs + progress * running  # (B, T)
    return _bce_on_probs(mixed, labels, mask)


def window_probs(
    logits: torch.Tensor, response_mask: torch.Tensor, window: int
) -> torch.Tensor:
    """Softmax(logit)-weighted mean of the last `window` response-token probs."""
    logits = logits.float()
    mask = response_mask.bool()
    B, T = logits.shape
    neg_inf = torch.finfo(logits.dtype).min
    lg = logits.masked_fill(~mask, neg_inf)  # (B, T)
    pr = token_probs(logits) * mask  # (B, T)
    lg = F.pad(lg, (window - 1, 0), value=neg_inf).unfold(1, window, 1)  # (B, T, W)
    pr = F.pad(pr, (window - 1, 0), value=0.0).unfold(1, window, 1)  # (B, T, W)
    weights = torch.softmax(lg, dim=-1)  # (B, T, W); uniform junk where no token
    out = (weights * pr).sum(-1)  # (B, T)
    return out * mask


def window_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    response_mask: torch.Tensor,
    window: int = 16,
) -> torch.Tensor:
    """BCE of the softmax-weighted sliding-window prediction (served as an EMA)."""
    return _bce_on_probs(
        window_probs(logits, response_mask, window), labels, response_mask.bool()
    )


def ntp_loss(
    lm_logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Next-token cross-entropy on response tokens (keeps the generator generating)."""
    pred = lm_logits[:, :-1]  # (B, T-1, V) position t predicts token t+1
    target = input_ids[:, 1:]  # (B, T-1)
    m = response_mask[:, 1:].bool()  # (B, T-1)
    if not m.any():
        return pred.sum() * 0
    # Upcast only the response positions (bf16 logits under autocast; V is ~49k).
    return F.cross_entropy(pred[m].float(), target[m])


def classifier_loss(
    cfg: OutputClassifierConfig,
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    progress: float,
) -> torch.Tensor:
    if cfg.loss == "running_max":
        return running_max_loss(logits, labels, mask, progress)
    return window_loss(logits, labels, mask, cfg.window)
