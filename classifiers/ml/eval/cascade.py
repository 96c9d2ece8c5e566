"""Probe cascade (after Constitutional Classifiers++).

A cheap probe (the value head on the generator's activations) scores all traffic.
Only items whose probe score falls inside a calibrated uncertainty band go to the
heavier classifier, and for those the final score is a weighted logit ensemble
    sigmoid(w * logit(p_probe) + (1 - w) * logit(p_heavy)),
so the heavy model's cost is paid on a few percent of traffic while confident probe
decisions stand alone. `compare_probe_options` trains probe variants (which layers,
which loss) on one feature cache so they can be compared like for like.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import numpy as np
from torch import nn

from classifiers.ml.device import pick_device
from classifiers.ml.eval.calibrate import threshold_for_fpr
from classifiers.ml.eval.evaluate import auroc, tpr_at_fpr
from classifiers.ml.output.encoding import encode_example, tokenizer_pad_id
from classifiers.ml.output.model import OutputClassifierConfig, load_backbone
from classifiers.ml.output.scoring import aggregate_scores, final_scores
from classifiers.ml.output.training import encode_features, train_head_on_features
from classifiers.ml.output.value_head import CausalLMWithValueHead
from classifiers.ml.serving.cascade import ensemble_score, logit
from classifiers.ml.types import Example

logger = logging.getLogger(__name__)

Item = TypeVar("Item")


@dataclass
class CascadeResult:
    score: float  # final score (probe alone, or the ensemble when escalated)
    escalated: bool  # the heavy classifier was consulted
    probe_score: float
    heavy_score: float | None  # None when not escalated


class Cascade(Generic[Item]):
    """probe_fn / heavy_fn score a batch of items (prompts, responses, ...)."""

    def __init__(
        self,
        probe_fn: Callable[[list[Item]], Sequence[float]],
        heavy_fn: Callable[[list[Item]], Sequence[float]],
        band: tuple[float, float],
        weight: float = 0.5,
    ) -> None:
        if not band[0] <= band[1]:
            raise ValueError("band must be (lo, hi) with lo <= hi")
        if not 0 <= weight <= 1:
            raise ValueError("weight must be in [0, 1]")
        self.probe_fn, self.heavy_fn = probe_fn, heavy_fn
        self.band, self.weight = band, weight

    def escalates(self, probe_score: float) -> bool:
        return self.band[0] <= probe_score <= self.band[1]

    def __call__(self, items: list[Item]) -> list[CascadeResult]:
        probe = [float(s) for s in self.probe_fn(items)]
        uncertain = [i for i, s in enumerate(probe) if self.escalates(s)]
        # One batched heavy call for just the uncertain items.
        heavy = self.heavy_fn([items[i] for i in uncertain]) if uncertain else []
        heavy_by_index = dict(zip(uncertain, (float(h) for h in heavy), strict=True))
        results = []
        for i, p in enumerate(probe):
            h = heavy_by_index.get(i)
            score = p if h is None else ensemble_score(p, h, self.weight)
            results.append(CascadeResult(score, h is not None, p, h))
        return results


def _youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The probe score maximising TPR - FPR (the natural decision boundary)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    best, best_j = 0.5, -np.inf
    for t in np.unique(scores):
        j = (pos >= t).mean() - (neg >= t).mean()
        if j > best_j:
            best, best_j = float(t), j
    return best


def calibrate_band(
    probe_scores: Sequence[float],
    labels: Sequence[int],
    *,
    escalate_fraction: float = 0.08,
    center: float | None = None,
    target_fpr: float | None = None,
) -> tuple[float, float]:
    """Band around the probe's decision boundary holding ~escalate_fraction of traffic.

    The boundary is `center` if given, else the probe threshold for `target_fpr`
    on the benign scores, else the Youden-optimal threshold. The band is the span
    of the scores nearest to it in logit space (distances in probability space
    would crowd the band near 0.5 and starve it near the tails).
    """
    scores = np.asarray(probe_scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if scores.size == 0:
        raise ValueError("calibrate_band needs scores")
    if center is None:
        if target_fpr is not None:
            center = float(threshold_for_fpr(scores[y == 0], target_fpr))
        else:
            center = _youden_threshold(scores, y)
    k = max(1, int(round(escalate_fraction * scores.size)))
    distance = np.abs(np.array([logit(s) for s in scores]) - logit(center))
    nearest = scores[np.argsort(distance, kind="stable")[:k]]
    return float(nearest.min()), float(nearest.max())


def cascade_stats(
    results: Sequence[CascadeResult],
    *,
    probe_cost: float = 0.0,
    heavy_cost: float = 1.0,
) -> dict[str, float]:
    """Escalation rate and cost relative to running the heavy classifier on all
    traffic: (n * probe_cost + heavy_calls * heavy_cost) / (n * heavy_cost). Pass
    measured per-call costs (e.g. seconds); the default probe cost 0 fits a probe on
    shared activations."""
    n = len(results)
    heavy_calls = sum(r.escalated for r in results)
    total = n * probe_cost + heavy_calls * heavy_cost
    return {
        "escalation_rate": heavy_calls / n if n else 0.0,
        "heavy_calls": float(heavy_calls),
        "relative_cost": total / (n * heavy_cost) if n and heavy_cost else 0.0,
    }


# ------------------------------------------------------------------ probe options


def default_probe_variants(n_layers: int) -> list[dict[str, Any]]:
    """Last layer vs a middle-to-late concatenation, each with both losses."""
    multi = (n_layers // 2, (3 * n_layers) // 4, -1)
    return [
        {"name": f"{where}/{loss}", "layers": layers, "loss": loss}
        for where, layers in (("last", (-1,)), ("multi", multi))
        for loss in ("running_max", "window")
    ]


def compare_probe_options(
    base_cfg: OutputClassifierConfig,
    train: list[Example],
    validation: list[Example],
    *,
    variants: list[dict[str, Any]] | None = None,
    fprs: tuple[float, ...] = (0.01, 0.05),
    lm: nn.Module | None = None,
    tokenizer: Any = None,
    device: str | None = None,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """Train fast-mode probe variants on ONE cached encoding and evaluate each.

    Each variant dict has name, layers, loss (any other key overrides base_cfg).
    Returns per variant: name, layers, loss, auroc, tpr_at_fpr {fpr: tpr},
    train_seconds and the history.
    """
    dev = pick_device(device)
    if lm is None or tokenizer is None:
        lm, tokenizer = load_backbone(base_cfg.backbone_dir, dev)
    lm = lm.to(dev).eval()
    n_layers = int(lm.config.num_hidden_layers)
    variants = variants or default_probe_variants(n_layers)
    # hidden_states has n_layers + 1 entries; map -1 etc. to one canonical index.
    canon = {v["name"]: [i % (n_layers + 1) for i in v["layers"]] for v in variants}
    union = sorted({i for idx in canon.values() for i in idx})
    train_enc = [encode_example(tokenizer, e, base_cfg.max_length) for e in train]
    val_enc = [encode_example(tokenizer, e, base_cfg.max_length) for e in validation]
    feats = encode_features(
        lm,
        train_enc + val_enc,
        tuple(union),
        pad_id=tokenizer_pad_id(tokenizer),
        batch_size=base_cfg.batch_size,
        on_progress=on_progress,
        should_cancel=should_cancel,
    )
    width = int(lm.config.hidden_size)
    train_labels = [e.label for e in train_enc]
    val_labels = [e.label for e in val_enc]
    out = []
    for v in variants:
        overrides = {k: val for k, val in v.items() if k != "name"}
        cfg = replace(base_cfg, mode="fast", **overrides)
        # Columns of this variant's layers inside the union cache, in its order.
        cols = np.concatenate(
            [np.arange(width) + union.index(i) * width for i in canon[v["name"]]]
        )
        sliced = [f[:, cols] for f in feats]
        model = CausalLMWithValueHead(lm, cfg.layers, cfg.dropout)
        t0 = time.perf_counter()
        history, val_probs = train_head_on_features(
            cfg,
            model,
            sliced[: len(train_enc)],
            train_labels,
            sliced[len(train_enc) :],
            val_labels,
            should_cancel=should_cancel,
        )
        seconds = time.perf_counter() - t0
        agg = [
            aggregate_scores(p, cfg.aggregator, float(cfg.ema_alpha)) for p in val_probs
        ]
        scores = final_scores(agg)
        out.append(
            {
                "name": v["name"],
                "layers": list(cfg.layers),
                "loss": cfg.loss,
                "auroc": auroc(scores, val_labels),
                "tpr_at_fpr": {str(f): tpr_at_fpr(scores, val_labels, f) for f in fprs},
                "train_seconds": seconds,
                "history": history,
            }
        )
        logger.info("probe %s: auroc %.3f", v["name"], out[-1]["auroc"])
    return out
