"""Dataset assembly: Stage I + augmentation + splits -> one BuiltDataset.

`build_dataset` runs data/stage1.py, then data/augment.py (when transforms are
configured), then data/splits.py, and counts the result (`count_examples`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from classifiers.ml.data.filters import Embedder
from classifiers.ml.data.prompts import GenerateConfig
from classifiers.ml.data.splits import ALL_SPLITS, HELDOUT_SPLIT, split_by_source
from classifiers.ml.data.stage1 import generate_stage1
from classifiers.ml.types import (
    ChatGenerator,
    ConstitutionSpec,
    Example,
    ProgressCallback,
    ShouldCancel,
    check_cancelled,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Assembly


@dataclass
class BuiltDataset:
    examples: list[Example]  # every example, meta["split"] set
    counts: dict[str, Any]  # per category / label / transform / split (count_examples)
    stats: dict[str, int] = field(default_factory=dict)  # Stage I filter counters

    def split(self, name: str) -> list[Example]:
        return [ex for ex in self.examples if ex.meta.get("split") == name]


def count_examples(examples: Iterable[Example]) -> dict[str, Any]:
    """Counts per category, label, transform, split and split/label, labels per
    category ("category_label": {category: {label: n}}) and the total, in one pass
    (a generator of examples is fine)."""
    counts: dict[str, Counter[str]] = {
        key: Counter()
        for key in ("category", "label", "transform", "split", "split_label")
    }
    by_category: dict[str, Counter[str]] = {}
    for ex in examples:
        split = str(ex.meta.get("split", ""))
        counts["category"][ex.category] += 1
        counts["label"][str(ex.label)] += 1
        counts["transform"][ex.transform] += 1
        counts["split"][split] += 1
        counts["split_label"][f"{split}/{ex.label}"] += 1
        by_category.setdefault(ex.category, Counter())[str(ex.label)] += 1
    out: dict[str, Any] = {key: dict(sorted(c.items())) for key, c in counts.items()}
    out["category_label"] = {category: dict(c) for category, c in by_category.items()}
    out["total"] = sum(counts["label"].values())
    return out


def build_dataset(
    constitution: ConstitutionSpec,
    generator: ChatGenerator,
    cfg: GenerateConfig,
    *,
    templates: Sequence[str] = (),
    on_progress: ProgressCallback | None = None,
    should_cancel: ShouldCancel | None = None,
    embed: Embedder | None = None,
) -> BuiltDataset:
    """Stage I -> augmentation (LLM transforms use the same generator) -> splits."""
    stats: dict[str, int] = {}
    originals = generate_stage1(
        constitution,
        generator,
        cfg,
        on_progress=on_progress,
        should_cancel=should_cancel,
        stats=stats,
        embed=embed,
    )
    examples = originals
    if cfg.transforms:
        # Looked up at call time, not import time: tests script the augmenter by
        # putting a stand-in classifiers.ml.data.augment in sys.modules.
        from classifiers.ml.data.augment import augment_examples

        languages = sorted(
            {lang for c in constitution.categories for lang in c.languages}
        )
        augmented = augment_examples(
            originals,
            transforms=list(cfg.transforms),
            variants_per_example=cfg.variants_per_example,
            seed=cfg.seed,
            llm=generator,
            templates=templates,
            max_chain=cfg.max_chain,
            languages=languages or None,
            llm_batch_size=cfg.batch_size,
            on_progress=on_progress,
            should_cancel=should_cancel,
        )
        # augment_examples may or may not echo the originals; keep each exactly once.
        present = {(ex.source_id, ex.transform) for ex in augmented}
        missing = [
            ex for ex in originals if (ex.source_id, ex.transform) not in present
        ]
        examples = missing + list(augmented)
    check_cancelled(should_cancel)
    splits = split_by_source(
        examples,
        fractions=cfg.fractions,
        seed=cfg.seed,
        heldout_families=cfg.heldout_families,
    )
    final = [ex for name in ALL_SPLITS for ex in splits[name]]
    if cfg.heldout_families and not splits[HELDOUT_SPLIT]:
        logger.warning(
            "held-out families %s produced no examples; add their transforms to "
            "cfg.transforms",
            cfg.heldout_families,
        )
    return BuiltDataset(examples=final, counts=count_examples(final), stats=stats)
