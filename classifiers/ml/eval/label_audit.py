"""Find generated examples whose label is probably wrong, for a person to check.

A small generator writes some queries that do not fit the category they were
generated for: a benign-labelled "Your question is about safe use." that reads as
harmful to every model, a harmful-labelled statement about disaster relief. On the
cbrn-demo datasets such label noise, not the classifier, decided TPR at 1% FPR (see
docs/BENCHMARKS.md). This module ranks the suspects so reviewers read dozens of
examples instead of thousands:

1. Out-of-fold scores. The sources are split into k folds (stratified by label); a
   fresh input head (the fast input classifier's, on frozen sentence embeddings) is
   trained on k-1 folds and scores the held-out one. No example is scored by a head
   that saw it.
2. Disagreement. A source is a suspect when its out-of-fold prediction disagrees
   with its label (P(other label) > 1/2); suspects are queued least confident in
   their own label first. Confident learning's stricter per-class thresholds (mean
   self-confidence, Northcutt et al. 2021) were tried first: on well-separated data
   that mean is ~0.99, so a plain gardening question labelled harmful, scored 0.03
   out of fold, was not flagged. People review the queue, so recall matters more
   than a short list. No cut-off is tuned on any split.

The model only orders the queue; people decide (keep, flip, drop). Because only
the suspects are read, errors the model agrees with stay: the caller also draws a
random spot-check of non-suspects so the remaining noise rate can be estimated.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from classifiers.ml.eval.evaluate import auroc
from classifiers.ml.input.losses import input_loss
from classifiers.ml.input.model import InputHead
from classifiers.ml.types import check_cancelled


@dataclass(frozen=True)
class AuditSource:
    """One source query (its original text, not an augmented copy)."""

    source_id: str
    text: str
    label: int  # 1 harmful (restricted category), 0 benign (permitted category)
    category: str


@dataclass
class AuditConfig:
    folds: int = 5
    epochs: int = 40
    hidden: int = 256
    lr: float = 1e-3
    batch_size: int = 32
    category_loss_weight: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError("an audit needs at least 2 folds")


@dataclass
class AuditFinding:
    source_id: str
    label: int
    category: str
    harm_score: float  # out-of-fold P(harmful)
    label_confidence: float  # out-of-fold probability of the label it carries
    suspect: bool
    # Where the source would go if its label is flipped: the most likely category
    # of the other kind, by the out-of-fold category head.
    suggested_category: str


@dataclass
class AuditResult:
    findings: list[AuditFinding]  # suspects first, least confident first
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def suspects(self) -> list[AuditFinding]:
        return [f for f in self.findings if f.suspect]


def stratified_folds(labels: Sequence[int], folds: int, seed: int) -> list[int]:
    """Fold index per item; each label's items are dealt round-robin after a shuffle."""
    rng = random.Random(seed)
    assignment = [0] * len(labels)
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(members)
        for position, index in enumerate(members):
            assignment[index] = position % folds
    return assignment


def train_audit_head(
    embeddings: torch.Tensor,  # (N, E)
    harm: torch.Tensor,  # (N,)
    category: torch.Tensor,  # (N,)
    n_categories: int,
    cfg: AuditConfig,
    seed: int,
) -> InputHead:
    generator = torch.Generator().manual_seed(seed)
    # fork_rng: init and dropout draw from a seeded RNG (reproducible audits) without
    # disturbing the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = InputHead(embeddings.shape[1], cfg.hidden, n_categories, dropout=0.1)
        optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=0.01)
        head.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(len(harm), generator=generator)
            for start in range(0, len(order), cfg.batch_size):
                index = order[start : start + cfg.batch_size]
                harm_logit, category_logits = head(embeddings[index])
                # The input classifier's own loss (harm BCE + weighted category CE).
                loss = input_loss(
                    harm_logit, category_logits, harm[index], category[index],
                    cfg.category_loss_weight,
                )  # fmt: skip
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    head.eval()
    return head


def out_of_fold_scores(
    embeddings: torch.Tensor,
    labels: Sequence[int],
    category_ids: Sequence[int],
    n_categories: int,
    cfg: AuditConfig,
    *,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """P(harmful) (N,) and category probabilities (N, C), each from a head that did
    not see the item."""
    n = len(labels)
    folds = min(cfg.folds, n)
    assignment = torch.tensor(stratified_folds(labels, folds, cfg.seed))
    harm_target = torch.tensor([float(y) for y in labels])
    category_target = torch.tensor(list(category_ids))
    harm_scores = torch.zeros(n)
    category_probs = torch.zeros(n, n_categories)
    for fold in range(folds):
        check_cancelled(should_cancel, "label audit cancelled")
        held_out = assignment == fold
        train = ~held_out
        if not bool(held_out.any()):
            continue
        head = train_audit_head(
            embeddings[train], harm_target[train], category_target[train],
            n_categories, cfg, seed=cfg.seed * 1000 + fold,
        )  # fmt: skip
        with torch.no_grad():
            harm_logit, category_logits = head(embeddings[held_out])
        harm_scores[held_out] = torch.sigmoid(harm_logit)
        category_probs[held_out] = torch.softmax(category_logits, dim=-1)
        if on_progress is not None:
            on_progress(stage="cross-validation", done=fold + 1, total=folds)
    return harm_scores, category_probs


def disagreements(harm_scores: Sequence[float], labels: Sequence[int]) -> list[bool]:
    """True where the out-of-fold prediction gives the other label more than 1/2."""
    return [
        (score < 0.5) if label == 1 else (score > 0.5)
        for score, label in zip(harm_scores, labels, strict=True)
    ]


def audit_labels(
    sources: Sequence[AuditSource],
    embeddings: torch.Tensor,  # (N, E), one per source, in order
    categories: Sequence[str],
    category_labels: Sequence[int],  # per category: 1 restricted, 0 permitted
    cfg: AuditConfig | None = None,
    *,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> AuditResult:
    cfg = cfg or AuditConfig()
    if len(sources) != embeddings.shape[0]:
        raise ValueError("one embedding per source")
    labels = [s.label for s in sources]
    if len(set(labels)) < 2:
        raise ValueError("an audit needs both harmful and benign sources")
    if min(labels.count(0), labels.count(1)) < cfg.folds:
        raise ValueError(f"an audit needs at least {cfg.folds} sources of each label")
    index = {name: i for i, name in enumerate(categories)}
    unknown = sorted({s.category for s in sources} - set(index))
    if unknown:
        raise ValueError(f"sources of unknown categories: {unknown}")
    harm, category_probs = out_of_fold_scores(
        embeddings.float().cpu(), labels, [index[s.category] for s in sources],
        len(categories), cfg, on_progress=on_progress, should_cancel=should_cancel,
    )  # fmt: skip
    scores = harm.tolist()
    suspects = disagreements(scores, labels)
    restricted = [i for i, label in enumerate(category_labels) if label == 1]
    permitted = [i for i, label in enumerate(category_labels) if label != 1]
    findings = []
    for i, source in enumerate(sources):
        other_kind = permitted if source.label == 1 else restricted
        probs = category_probs[i]
        suggested = (
            categories[max(other_kind, key=lambda c: float(probs[c]))]
            if other_kind
            else source.category
        )
        confidence = scores[i] if source.label == 1 else 1.0 - scores[i]
        findings.append(
            AuditFinding(
                source_id=source.source_id,
                label=source.label,
                category=source.category,
                harm_score=scores[i],
                label_confidence=confidence,
                suspect=suspects[i],
                suggested_category=suggested,
            )  # fmt: skip
        )
    findings.sort(key=lambda f: (not f.suspect, f.label_confidence))
    n_suspects = sum(suspects)
    stats = {
        "sources": len(sources),
        "suspects": n_suspects,
        "suspects_harmful_label": sum(
            1 for f in findings if f.suspect and f.label == 1
        ),
        "suspects_benign_label": sum(1 for f in findings if f.suspect and f.label == 0),
        "suspect_fraction": n_suspects / len(sources),
        "folds": min(cfg.folds, len(sources)),
    }
    return AuditResult(findings=findings, stats=stats)


def spot_check_sample(findings: Sequence[AuditFinding], n: int, seed: int) -> list[str]:
    """Source ids of a random sample of non-suspects, for an unbiased estimate of
    the label errors the model did not flag."""
    pool = sorted(f.source_id for f in findings if not f.suspect)
    rng = random.Random(seed)
    return rng.sample(pool, min(n, len(pool)))



def score_histogram(
    findings: Sequence[AuditFinding], bins: int = 10
) -> dict[str, list[int]]:
    """Counts of out-of-fold harm scores per bin, per generated label."""
    counts = {"harmful": [0] * bins, "benign": [0] * bins}
    for f in findings:
        index = min(int(f.harm_score * bins), bins - 1)
        counts["harmful" if f.label == 1 else "benign"][index] += 1
    return counts


# ---------------------------------------------------------------------------
# Learning from reviewers' decisions
#
# The out-of-fold heads above learn the generated labels, so they share the errors
# the generator makes systematically (session 5: a harmful-labelled defensive
# question scores 1.0). Reviewers' decisions are labels of a different thing,
# "was the generated label wrong?", and a head trained on a few dozen of them
# learns the generator's habits instead (bench stage1_labels: out-of-fold AUROC
# 0.81 from 206 marks). It orders the undecided items, likely errors first.

MIN_DECIDED_EACH = 3  # decided items needed on each side (label right / wrong)


@dataclass
class DecisionRanking:
    wrong_scores: list[float]  # P(generated label is wrong), per open item
    decided: int
    wrong: int
    # Out-of-fold AUROC of the same model on the decided items: how far to trust
    # the order (None when there are too few decisions for folds).
    auroc: float | None


def decision_features(embeddings: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    """Embedding routed by the generated label, plus the label itself: what makes a
    harmful label wrong (a defensive question) differs from what makes a benign
    one wrong, so each label gets its own weights."""
    harmful = torch.as_tensor(labels, dtype=embeddings.dtype).reshape(-1, 1)
    return torch.cat(
        [embeddings * harmful, embeddings * (1 - harmful), harmful, 1 - harmful], 1
    )


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, *, l2: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression with an L2 penalty, fitted with L-BFGS (deterministic)."""
    weight = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(1, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=200, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            x @ weight + bias, y
        )
        loss = loss + l2 * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def rank_by_decisions(
    decided_embeddings: torch.Tensor,  # (D, E)
    decided_labels: Sequence[int],  # generated labels
    decided_wrong: Sequence[bool],  # a reviewer flipped or dropped it
    open_embeddings: torch.Tensor,  # (U, E)
    open_labels: Sequence[int],
    *,
    folds: int = 5,
    seed: int = 0,
) -> DecisionRanking:
    wrong = [bool(w) for w in decided_wrong]
    n_wrong = sum(wrong)
    if min(n_wrong, len(wrong) - n_wrong) < MIN_DECIDED_EACH:
        raise ValueError(
            f"decide at least {MIN_DECIDED_EACH} items whose label is right and "
            f"{MIN_DECIDED_EACH} whose label is wrong first (now {len(wrong) - n_wrong} "
            f"right, {n_wrong} wrong)"
        )
    x = decision_features(decided_embeddings.float(), decided_labels)
    y = torch.tensor(wrong, dtype=torch.float32)
    auroc_oof = None
    k = min(folds, n_wrong, len(wrong) - n_wrong)
    if k >= 2:
        fold_of = torch.tensor(stratified_folds([int(w) for w in wrong], k, seed))
        oof = torch.zeros(len(wrong))
        for fold in range(k):
            held = fold_of == fold
            weight, bias = fit_logistic(x[~held], y[~held])
            oof[held] = x[held] @ weight + bias
        auroc_oof = auroc(oof.tolist(), [int(w) for w in wrong])
    weight, bias = fit_logistic(x, y)
    scores: list[float] = []
    if len(open_labels):
        logits = decision_features(open_embeddings.float(), open_labels) @ weight + bias
        scores = torch.sigmoid(logits).tolist()
    if not all(math.isfinite(v) for v in scores) or (
        auroc_oof is not None and not math.isfinite(auroc_oof)
    ):
        raise ValueError(
            "the model of the decisions did not converge; decide a few more"
        )
    return DecisionRanking(
        wrong_scores=scores, decided=len(wrong), wrong=n_wrong, auroc=auroc_oof
    )
