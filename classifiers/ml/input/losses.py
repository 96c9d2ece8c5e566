"""The input classifier's loss: harm BCE plus category cross-entropy.

`loss_targets` turns Examples into harm and category targets (IGNORE_CATEGORY for an
unknown category); `input_loss` is the weighted loss the trainer and the label
audit (eval/label_audit.py) both use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from classifiers.ml.input.model import IGNORE_CATEGORY
from classifiers.ml.types import Example

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- losses


def loss_targets(
    examples: Sequence[Example], categories: list[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    index = {name: i for i, name in enumerate(categories)}
    unknown = sorted({e.category for e in examples} - set(index))
    if unknown:
        logger.warning("categories unknown to the head (no category loss): %s", unknown)
    harm = torch.tensor([float(e.label) for e in examples], device=device)  # (N,)
    category = torch.tensor(
        [index.get(e.category, IGNORE_CATEGORY) for e in examples], device=device
    )  # (N,)
    return harm, category


def input_loss(
    harm_logit: torch.Tensor,
    category_logits: torch.Tensor,
    harm_target: torch.Tensor,
    category_target: torch.Tensor,
    category_weight: float,
    example_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE(harm) + category_weight * CE(category); with example_weight (B,), each
    example's terms are weighted and the batch is a weighted mean."""
    weight = torch.ones_like(harm_target) if example_weight is None else example_weight
    per_example = F.binary_cross_entropy_with_logits(
        harm_logit, harm_target, reduction="none"
    )  # (B,)
    loss = (per_example * weight).sum() / weight.sum()
    known = category_target != IGNORE_CATEGORY
    # cross_entropy of an all-ignored batch is NaN; skip the term instead.
    if category_weight > 0 and bool(known.any()):
        category_terms = F.cross_entropy(
            category_logits[known], category_target[known], reduction="none"
        )  # (K,)
        known_weight = weight[known]
        loss = loss + category_weight * (category_terms * known_weight).sum() / known_weight.sum()
    return loss
