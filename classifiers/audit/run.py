"""The worker side of a label audit: out-of-fold input heads score every source and
queue the labels they disagree with (plus a random spot check).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from django.db import transaction

from classifiers.core.jobs import JobRunner
from classifiers.core.model_cache import relevance_embedder
from classifiers.ml.types import Cancelled
from classifiers.models import (
    Dataset,
    LabelAudit,
    LabelAuditItem,
)
from classifiers.models.jobs import JobStatus

EMBED_BATCH = 64


class AuditError(ValueError):
    """Bad input for an audit (shown to the user as it is)."""


def _sources(dataset: Dataset) -> tuple[list[Any], dict[str, str], set[str]]:
    """Every source query's original text (reviewed feedback excluded: people
    labelled it), the split of each generated one (the only ones audited), and the
    generated ones an applied audit already decided."""
    from classifiers.ml.eval.label_audit import AuditSource

    rows = (
        dataset.examples.filter(transform="original")
        .order_by("id")
        .values_list("source_id", "prompt_text", "label", "category", "meta", "split")
    )
    sources, generated, seen, reviewed = [], {}, set(), set()
    for source_id, text, label, category, meta, split in rows:
        # Filtered here, not with exclude(meta__source=...): SQL's NULL logic would
        # also drop the rows whose meta has no "source" key.
        if source_id in seen or (meta or {}).get("source") == "feedback":
            continue
        seen.add(source_id)
        sources.append(AuditSource(source_id, text, int(label), category))
        if (meta or {}).get("source") == "generated":
            generated[source_id] = split
            if (meta or {}).get("reviewed"):
                reviewed.add(source_id)
    return sources, generated, reviewed


def execute_audit(
    audit: LabelAudit,
    *,
    progress: Callable[..., None],
    should_cancel: Callable[[], bool],
    finish: Callable[..., None],
) -> None:
    import torch

    from classifiers.ml.eval.label_audit import (
        AuditConfig,
        audit_labels,
        score_histogram,
        spot_check_sample,
    )

    dataset = audit.dataset
    spec = dataset.constitution_version.to_spec()
    categories = [c.name for c in spec.categories]
    sources, generated, reviewed = _sources(dataset)
    if not generated:
        raise AuditError(f"dataset #{dataset.pk} has no generated queries to audit")
    embed = relevance_embedder()
    texts = [s.text for s in sources]
    chunks = []
    for start in range(0, len(texts), EMBED_BATCH):
        if should_cancel():
            raise Cancelled()
        chunks.append(torch.as_tensor(embed(texts[start : start + EMBED_BATCH])))
        progress(stage="embedding", done=min(start + EMBED_BATCH, len(texts)), total=len(texts))
    cfg = AuditConfig(folds=int(audit.config.get("folds", 5)), seed=int(audit.config.get("seed", 0)))
    embeddings = torch.cat(chunks)
    row_of = {s.source_id: i for i, s in enumerate(sources)}
    try:
        result = audit_labels(
            sources, embeddings, categories, [c.label for c in spec.categories], cfg,
            on_progress=progress, should_cancel=should_cancel,
        )  # fmt: skip
    except ValueError as err:
        raise AuditError(str(err)) from err
    # Sources people already decided in an earlier audit still train the heads, but
    # are not queued again.
    findings = [
        f for f in result.findings if f.source_id in generated and f.source_id not in reviewed
    ]
    review_splits = set(audit.config.get("review_splits", []))
    in_split = [
        f for f in findings if not f.suspect and generated[f.source_id] in review_splits
    ]
    in_split_ids = {f.source_id for f in in_split}
    others = [f for f in findings if f.source_id not in in_split_ids]
    spot = set(spot_check_sample(others, int(audit.config.get("spot_check", 0)), cfg.seed))
    text_of = {s.source_id: s.text for s in sources}
    # Non-suspects in a seeded random order: a review stopped half-way is still a
    # random sample (source ids sort by category).
    shuffled = random.Random(cfg.seed).sample(in_split, len(in_split))
    spot_items = random.Random(cfg.seed + 1).sample(
        [f for f in others if f.source_id in spot], len(spot)
    )
    queue = (
        [(f, "suspect") for f in findings if f.suspect]
        + [(f, "split") for f in shuffled]
        + [(f, "spot_check") for f in spot_items]
    )
    items = [
        LabelAuditItem(
            audit=audit, source_id=f.source_id, text=text_of[f.source_id], label=f.label,
            category=f.category, harm_score=f.harm_score, suspect=f.suspect, reason=reason,
            suggested_category=f.suggested_category, rank=rank,
            embedding=embedding_bytes(embeddings[row_of[f.source_id]]),
        )  # fmt: skip
        for rank, (f, reason) in enumerate(queue)
    ]
    summary = {
        **result.stats,
        "generated_sources": len(findings),
        "already_reviewed": len(reviewed),
        "generated_suspects": sum(1 for f in findings if f.suspect),
        "spot_check": len(spot),
        "review_split_sources": len(in_split),
        "histogram": score_histogram(findings),
    }
    with transaction.atomic():
        # A cancel that came in late, or a reaper that failed the job, wins.
        row = LabelAudit.objects.select_for_update().get(pk=audit.pk)
        if row.status != JobStatus.RUNNING:
            raise AuditError(f"audit #{audit.pk} is {row.status}; nothing was saved")
        if row.cancel_requested:
            raise Cancelled()
        LabelAuditItem.objects.bulk_create(items)
        finish(summary=summary, stage="done")


def embedding_bytes(vector: Any) -> bytes:
    """A sentence embedding as float16 bytes (768 bytes for MiniLM's 384)."""
    import numpy as np

    return np.asarray(vector, dtype=np.float16).tobytes()


def embeddings_from_bytes(blobs: Sequence[bytes]) -> Any:
    """Blobs written by embedding_bytes -> an (N, E) float32 tensor ((0, 0) for none)."""
    import numpy as np
    import torch

    if not blobs:
        return torch.zeros(0, 0)
    return torch.from_numpy(
        np.stack([np.frombuffer(bytes(b), dtype=np.float16) for b in blobs]).astype(np.float32)
    )


def run_audit_job(audit_pk: int) -> None:
    """Run a queued LabelAudit under a JobRunner (also used by the command)."""

    audit = LabelAudit.objects.select_related("dataset__constitution_version").get(pk=audit_pk)
    with JobRunner(audit) as runner:
        if runner.skip:
            return
        execute_audit(
            audit, progress=runner.progress, should_cancel=runner.should_cancel,
            finish=runner.finish,
        )  # fmt: skip
