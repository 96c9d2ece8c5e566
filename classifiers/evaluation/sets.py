"""Import a labelled file (JSONL, CSV, Parquet) as a named evaluation set.

The reading and validation are classifiers/ml/eval/labelled_sets.py; this module
drops exact duplicates (the same text twice would count twice) and writes rows,
all or nothing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction

from classifiers.ml.eval.labelled_sets import LabelledSetError, read_labelled_set
from classifiers.models import EvaluationPrompt, EvaluationSet

SAVE_BATCH = 2000
# A web upload is read inside the request; this and the upload's size bound its work.
WEB_IMPORT_PROMPTS = 50_000
MAX_SET_PROMPTS = 200_000  # manage.py evaluate --import takes up to this many


class EvaluationSetError(ValueError):
    """A set cannot be imported; the message says why."""


def set_name(name: str) -> str:
    name = " ".join(str(name).split())
    if not name or len(name) > 100:
        raise EvaluationSetError("give the set a name of 1 to 100 characters")
    return name


def import_evaluation_set(
    *,
    name: str,
    path: str | Path,
    user: Any,
    description: str = "",
    limit: int = MAX_SET_PROMPTS,
) -> EvaluationSet:
    """A new set from a labelled file: every line needs text and label (1 harmful,
    0 benign), kind is optional. A bad line, an existing name or too many prompts
    import nothing."""
    name = set_name(name)
    try:
        prompts = read_labelled_set(path)
    except LabelledSetError as exc:
        raise EvaluationSetError(str(exc)) from None
    if len(prompts) > limit:
        raise EvaluationSetError(f"{len(prompts)} prompts: import at most {limit} at a time")
    seen: set[tuple[str, int]] = set()
    unique = []
    with_reply = sum(1 for p in prompts if p.response)
    if with_reply:
        # Its labels are the replies', not the prompts': scored as prompts, a
        # refusal to a harmful request would count as a false positive.
        raise EvaluationSetError(
            f"{with_reply} line(s) carry a response: an evaluation set holds prompts. "
            "Score replies with an output classifier: manage.py evaluate --model N --file FILE"
        )
    for prompt in prompts:
        key = (prompt.text.strip(), prompt.label)
        if key not in seen:
            seen.add(key)
            unique.append(prompt)
    labels = Counter(p.label for p in unique)
    by_kind = Counter((p.kind, p.label) for p in unique)
    stats = {
        "prompts": len(unique),
        "harmful": labels[1],
        "benign": labels[0],
        "duplicates_dropped": len(prompts) - len(unique),
        "kinds": {
            kind: {"harmful": by_kind[kind, 1], "benign": by_kind[kind, 0]}
            for kind in sorted({p.kind for p in unique})
        },
    }
    taken = EvaluationSetError(
        f"a set named {name!r} exists: choose another name (a set is never added to, "
        "so every model's scores on it stay comparable)"
    )
    if EvaluationSet.objects.filter(name=name).exists():
        raise taken
    with transaction.atomic():
        try:
            # Two imports of one name at once: the unique constraint decides.
            with transaction.atomic():
                evaluation_set = EvaluationSet.objects.create(
                    name=name, description=description[:500], stats=stats,
                    created_by=user if getattr(user, "is_authenticated", False) else None,
                )  # fmt: skip
        except IntegrityError:
            raise taken from None
        EvaluationPrompt.objects.bulk_create(
            [
                EvaluationPrompt(
                    evaluation_set=evaluation_set, position=i, text=p.text, label=p.label,
                    kind=p.kind[:64],
                )  # fmt: skip
                for i, p in enumerate(unique)
            ],
            batch_size=SAVE_BATCH,
        )
    return evaluation_set
