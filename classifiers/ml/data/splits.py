"""Dataset splits: train / validation / calibration / test, and held-out transforms.

Examples are split BY SOURCE QUERY (`split_by_source`), so no query's variants
straddle splits; transform families named as held out go to HELDOUT_SPLIT only,
to measure generalisation to unseen attacks (`transform_families`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from classifiers.ml.types import Example

SPLITS = ("train", "validation", "calibration", "test")


HELDOUT_SPLIT = "heldout_transforms"


ALL_SPLITS = (*SPLITS, HELDOUT_SPLIT)


# ---------------------------------------------------------------------------
# Splits


def transform_families(transform: str) -> set[str]:
    """Families of the transforms in a "+"-joined chain ("original" has none)."""
    try:
        from classifiers.ml.data.transforms import transform_family
    except ImportError:  # transforms module unavailable: fall back to the name stem
        transform_family = None  # type: ignore[assignment]
    families: set[str] = set()
    for name in (part.strip() for part in (transform or "").split("+")):
        if not name or name == "original":
            continue
        family = None
        if transform_family is not None:
            try:
                family = transform_family(name)
            except (KeyError, ValueError):
                family = None
        families.add(family or re.split(r"[:(]", name, maxsplit=1)[0].strip())
    return families


def _normalise_fractions(
    fractions: Mapping[str, float] | Sequence[float],
) -> dict[str, float]:
    if not isinstance(fractions, Mapping):
        # Positional form: (train, validation, test[, calibration]).
        names = ("train", "validation", "test", "calibration")[: len(fractions)]
        fractions = dict(zip(names, fractions, strict=False))
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; use {SPLITS}")
    if any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"split fractions must be >= 0 and not all 0: {fractions}")
    total = sum(fractions.values())
    return {name: fractions.get(name, 0.0) / total for name in SPLITS}


def _allocate(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding of n items over the splits; train never starves."""
    exact = {name: n * frac for name, frac in fractions.items()}
    counts = {name: int(value) for name, value in exact.items()}
    leftovers = sorted(exact, key=lambda s: (counts[s] - exact[s], SPLITS.index(s)))
    for name in leftovers[: n - sum(counts.values())]:
        counts[name] += 1
    if n and counts["train"] == 0 and fractions["train"] > 0:
        donor = max(counts, key=lambda s: counts[s])
        counts[donor] -= 1
        counts["train"] += 1
    return counts


def split_by_source(
    examples: Iterable[Example],
    *,
    fractions: Mapping[str, float] | Sequence[float],
    seed: int,
    heldout_families: Sequence[str] = (),
) -> dict[str, list[Example]]:
    """Split by source_id, stratified per category; returns copies with meta["split"].

    Keys: train, validation, calibration, test, heldout_transforms (always all).
    Every source query gets one split and all its variants follow it, except that
    variants using a held-out transform family go ONLY to heldout_transforms (never
    train); they keep meta["source_split"] so an evaluation can restrict itself to
    sources not seen in training (or measure the transform gap on seen ones).
    """
    examples = list(examples)
    shares = _normalise_fractions(fractions)
    heldout = set(heldout_families)
    sources: dict[str, dict[str, None]] = {}  # category -> ordered set of source ids
    for ex in examples:
        sources.setdefault(ex.category, {}).setdefault(ex.source_id, None)
    split_of: dict[str, str] = {}
    for category in sorted(sources):
        ids = sorted(sources[category])
        random.Random(f"{seed}:{category}").shuffle(ids)
        start = 0
        for name, count in _allocate(len(ids), shares).items():
            for source_id in ids[start : start + count]:
                split_of.setdefault(source_id, name)
            start += count
    out: dict[str, list[Example]] = {name: [] for name in ALL_SPLITS}
    for ex in examples:
        source_split = split_of[ex.source_id]
        meta = dict(ex.meta)
        names = set(ex.transform.split("+"))  # a listed transform name also counts
        if heldout and (transform_families(ex.transform) | names) & heldout:
            meta.update(split=HELDOUT_SPLIT, source_split=source_split)
            out[HELDOUT_SPLIT].append(replace(ex, meta=meta))
        else:
            meta["split"] = source_split
            out[source_split].append(replace(ex, meta=meta))
    return out
