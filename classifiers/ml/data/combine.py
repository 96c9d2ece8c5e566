"""Join datasets of one constitution version into one, without leaking across splits.

One local generation run is small (SmolLM2-135M on two CPU cores writes about 1,300
source queries in 40 minutes) and a reviewed dataset holds hours of people's work; a
combined dataset pools several so a retrain loses neither. Three rules:

- Source ids get their part's name as a prefix: every run numbers its sources from
  0, and splits, audits and evaluation group by source id.
- Every source keeps the split its own run gave it, with all its variants.
- A source whose original text repeats (or nearly repeats) a source of an earlier
  part is left out with all its variants. The author's example queries open every
  run, each run puts them in its own random split, and a generator asked the same
  thing twice repeats itself: without this the same question could be trained on in
  one part and tested on in another.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from classifiers.ml.data.dedupe import MinHashDeduper
from classifiers.ml.types import Example

NEAR_DUPLICATE_THRESHOLD = 0.8  # the Stage I filter's: estimated Jaccard of 5-grams


@dataclass
class CombinedExamples:
    examples: list[Example]
    # per part: sources, kept_sources, duplicate_sources, examples (kept), and how
    # many left-out duplicates carried the other label than the source they repeat
    parts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def duplicate_sources(self) -> int:
        return sum(part["duplicate_sources"] for part in self.parts.values())

    @property
    def label_conflicts(self) -> int:
        return sum(part["label_conflicts"] for part in self.parts.values())


def source_texts(examples: Sequence[Example]) -> dict[str, tuple[str, int]]:
    """source_id -> (the text that stands for it, its label), in order of appearance:
    the untransformed prompt (every generated run keeps one per source, held-out
    variants or not); a source without one (an imported file) uses its first variant."""
    found: dict[str, tuple[str, int]] = {}
    has_original: set[str] = set()
    for ex in examples:
        if ex.source_id in has_original:
            continue
        if ex.transform == "original":
            found[ex.source_id] = (ex.prompt_text, ex.label)
            has_original.add(ex.source_id)
        elif ex.source_id not in found:
            found[ex.source_id] = (ex.prompt_text, ex.label)
    return found


def combine_examples(
    parts: Sequence[tuple[str, Iterable[Example]]],
    *,
    threshold: float = NEAR_DUPLICATE_THRESHOLD,
) -> CombinedExamples:
    """`parts` are (name, examples) in priority order: a repeated source is kept from
    the first part that has it. Names must be distinct; they prefix source ids."""
    names = [name for name, _ in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"part names must be distinct: {names}")
    deduper = MinHashDeduper(threshold=threshold)
    label_of_kept: list[int] = []  # the deduper's insertion order
    combined: list[Example] = []
    stats: dict[str, dict[str, int]] = {}
    for name, examples in parts:
        examples = list(examples)
        texts = source_texts(examples)
        kept: set[str] = set()
        new_texts: list[tuple[str, int]] = []
        conflicts = 0
        for source_id, (text, label) in texts.items():
            # Only earlier parts count: a part's own near copies (two author
            # examples alike) were the run's choice, and splits within one run are
            # already by source.
            match = deduper.match(text)
            if match is None:
                kept.add(source_id)
                new_texts.append((text, label))
            elif label_of_kept[match] != label:
                conflicts += 1
        for text, label in new_texts:
            if deduper.add_if_new(text):
                label_of_kept.append(label)
        part_examples = [
            replace(ex, source_id=f"{name}:{ex.source_id}", meta=dict(ex.meta))
            for ex in examples
            if ex.source_id in kept
        ]
        combined.extend(part_examples)
        stats[name] = {
            "sources": len(texts),
            "kept_sources": len(kept),
            "duplicate_sources": len(texts) - len(kept),
            "label_conflicts": conflicts,
            "examples": len(part_examples),
        }
    return CombinedExamples(examples=combined, parts=stats)
