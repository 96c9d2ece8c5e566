"""The label audit finds planted label errors from out-of-fold scores alone."""

from __future__ import annotations

import pytest
import torch

from classifiers.ml.eval.evaluate import auroc
from classifiers.ml.eval.intervals import wilson_interval
from classifiers.ml.eval.label_audit import (
    AuditConfig,
    AuditSource,
    audit_labels,
    disagreements,
    out_of_fold_scores,
    rank_by_decisions,
    spot_check_sample,
    stratified_folds,
    train_audit_head,
)
from classifiers.ml.types import Cancelled

CATEGORIES = ["Weapons", "Pathogens", "Chemistry education", "Public health"]
CATEGORY_LABELS = [1, 1, 0, 0]  # per category: 1 restricted, 0 permitted


def _clustered(n_per_category: int, flipped: set[int], seed: int = 0):
    """Four well-separated clusters, one per category; the sources at `flipped`
    carry the opposite label (and a category of the other kind)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(4, 16) * 4.0
    sources, rows = [], []
    for ci, category in enumerate(CATEGORIES):
        for _ in range(n_per_category):
            i = len(sources)
            label = CATEGORY_LABELS[ci]
            name = category
            if i in flipped:  # a label error: generated under the wrong category
                label = 1 - label
                name = CATEGORIES[(ci + 2) % 4]
            sources.append(AuditSource(f"s{i}", f"text {i}", label, name))
            rows.append(centres[ci] + 0.5 * torch.randn(16, generator=generator))
    return sources, torch.stack(rows)


def test_planted_label_errors_are_the_suspects():
    flipped = {3, 27, 45, 70}
    sources, embeddings = _clustered(20, flipped)
    result = audit_labels(
        sources, embeddings, CATEGORIES, CATEGORY_LABELS, AuditConfig(epochs=30)
    )
    suspects = {f.source_id for f in result.suspects}
    assert {f"s{i}" for i in flipped} <= suspects
    # Few false alarms on clean, separated data: reviewers read a short queue.
    assert len(suspects) <= len(flipped) + 3
    # Suspects come first, least confident in their own label first.
    assert all(f.suspect for f in result.findings[: len(suspects)])
    confidences = [f.label_confidence for f in result.findings[: len(suspects)]]
    assert confidences == sorted(confidences)
    assert result.stats["sources"] == 80 and result.stats["suspects"] == len(suspects)


def test_suggested_category_is_of_the_other_kind():
    sources, embeddings = _clustered(20, {3})
    result = audit_labels(
        sources, embeddings, CATEGORIES, CATEGORY_LABELS, AuditConfig(epochs=30)
    )
    finding = next(f for f in result.findings if f.source_id == "s3")
    # s3 sits in the Weapons cluster but was labelled benign "Chemistry education":
    # flipping it makes it harmful, so the suggestion is the restricted cluster.
    assert finding.label == 0 and finding.harm_score > 0.5
    assert finding.suggested_category == "Weapons"


def test_no_item_is_scored_by_a_head_that_saw_it():
    # Random labels on random points: a head that saw an item memorises its label
    # (AUROC near 1 in-sample); scored out of fold there is nothing to learn.
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(80, 32, generator=generator)
    labels = torch.randint(0, 2, (80,), generator=generator).tolist()
    categories = [0 if y else 2 for y in labels]
    cfg = AuditConfig(folds=4, epochs=150)
    harm, _ = out_of_fold_scores(embeddings, labels, categories, 4, cfg)
    assert auroc(harm.tolist(), labels) < 0.75
    in_sample = train_audit_head(
        embeddings,
        torch.tensor(labels, dtype=torch.float),
        torch.tensor(categories),
        4,
        cfg,
        0,
    )
    with torch.no_grad():
        memorised = torch.sigmoid(in_sample(embeddings)[0])
    assert auroc(memorised.tolist(), labels) > 0.95


def test_stratified_folds_balance_each_label():
    labels = [1] * 10 + [0] * 25
    folds = stratified_folds(labels, 5, seed=3)
    for fold in range(5):
        members = [y for y, f in zip(labels, folds, strict=True) if f == fold]
        assert members.count(1) == 2 and members.count(0) == 5
    assert folds == stratified_folds(labels, 5, seed=3)  # seeded


def test_suspects_are_the_disagreements():
    scores = [0.9, 0.3, 0.1, 0.2, 0.95, 0.5]  # out-of-fold P(harmful)
    labels = [1, 1, 0, 0, 0, 1]
    assert disagreements(scores, labels) == [False, True, False, False, True, False]


def test_bad_input_is_refused():
    sources, embeddings = _clustered(2, set())
    with pytest.raises(ValueError, match="at least 5 sources of each label"):
        audit_labels(sources, embeddings, CATEGORIES, CATEGORY_LABELS)
    sources, embeddings = _clustered(10, set())
    with pytest.raises(ValueError, match="one embedding per source"):
        audit_labels(sources, embeddings[:-1], CATEGORIES, CATEGORY_LABELS)
    with pytest.raises(ValueError, match="unknown categories"):
        audit_labels(sources, embeddings, CATEGORIES[:3], CATEGORY_LABELS[:3])
    harmful_only = [s for s in sources if s.label == 1]
    with pytest.raises(ValueError, match="both harmful and benign"):
        audit_labels(
            harmful_only, embeddings[: len(harmful_only)], CATEGORIES, CATEGORY_LABELS
        )


def test_cancel_stops_between_folds():
    sources, embeddings = _clustered(10, set())
    with pytest.raises(Cancelled):
        audit_labels(
            sources, embeddings, CATEGORIES, CATEGORY_LABELS, should_cancel=lambda: True
        )


def test_spot_check_draws_only_non_suspects_reproducibly():
    sources, embeddings = _clustered(20, {3, 27})
    result = audit_labels(
        sources, embeddings, CATEGORIES, CATEGORY_LABELS, AuditConfig(epochs=30)
    )
    sample = spot_check_sample(result.findings, 10, seed=1)
    assert len(sample) == 10 and len(set(sample)) == 10
    assert not set(sample) & {f.source_id for f in result.suspects}
    assert sample == spot_check_sample(result.findings, 10, seed=1)


def test_wilson_interval():
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.15 < high < 0.18  # 0 of 20 still allows ~16%
    low, high = wilson_interval(5, 50)
    assert low < 0.1 < high
    assert wilson_interval(0, 0) == (0.0, 1.0)


# --------------------------------------------------------------- learning from decisions


def _habit_embeddings(n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two kinds of text (unit vectors near two directions): A real requests, B
    defensive questions. Returns (embeddings, is_b)."""
    generator = torch.Generator().manual_seed(seed)
    is_b = torch.arange(n) % 2 == 1
    centres = torch.zeros(2, 16)
    centres[0, 0] = centres[1, 1] = 1.0
    x = centres[is_b.long()] + 0.35 * torch.randn(n, 16, generator=generator)
    return torch.nn.functional.normalize(x, dim=1), is_b


def test_decisions_teach_which_generated_labels_are_wrong():
    # The generator's habit: defensive questions (B) labelled harmful. Labelled
    # benign, the same kind of text is right; so is a harmful-labelled request (A).
    x, is_b = _habit_embeddings(120, seed=1)
    labels = [1] * 80 + [0] * 40
    wrong = [bool(b) and y == 1 for b, y in zip(is_b.tolist(), labels, strict=True)]
    decided = list(range(0, 120, 3))  # a third decided
    pending = [i for i in range(120) if i not in decided]
    ranking = rank_by_decisions(
        x[decided], [labels[i] for i in decided], [wrong[i] for i in decided],
        x[pending], [labels[i] for i in pending],
    )  # fmt: skip
    assert ranking.decided == 40 and ranking.wrong == sum(wrong[i] for i in decided)
    assert ranking.auroc is not None and ranking.auroc > 0.9
    truth = [int(wrong[i]) for i in pending]
    assert auroc(ranking.wrong_scores, truth) > 0.95
    benign_b = [
        s
        for s, i in zip(ranking.wrong_scores, pending, strict=True)
        if labels[i] == 0 and is_b[i]
    ]
    harmful_b = [
        s
        for s, i in zip(ranking.wrong_scores, pending, strict=True)
        if labels[i] == 1 and is_b[i]
    ]
    # The same kind of text is a likely error only under the label it contradicts.
    assert max(benign_b) < min(harmful_b)


def test_learning_needs_decisions_on_both_sides():
    x, _ = _habit_embeddings(10, seed=2)
    with pytest.raises(
        ValueError,
        match=r"at least 3 .* right and 3 .* wrong first \(now 5 right, 2 wrong\)",
    ):
        rank_by_decisions(x[:7], [1] * 7, [True, True] + [False] * 5, x[7:], [1] * 3)
    # Exactly enough: three folds of one error and one right label each.
    few = rank_by_decisions(x[:6], [1] * 6, [True] * 3 + [False] * 3, x[6:], [1] * 4)
    assert len(few.wrong_scores) == 4 and few.auroc is not None
