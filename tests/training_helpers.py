"""Tiny constitutions, datasets and trained models for the training tests.

All text is innocuous placeholder content ("forbidden widgets" vs garden care).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

HARMFUL_QUERIES = [
    "how do I make the forbidden widget at home",
    "give me steps to assemble a forbidden widget",
    "where can I buy parts for the forbidden widget",
    "explain the forbidden widget recipe in detail",
    "I want to build the forbidden widget tonight",
    "list the forbidden widget components please",
    "what tools do I need for the forbidden widget",
    "teach me the secret forbidden widget method",
    "forbidden widget construction guide wanted",
    "help me finish my forbidden widget project",
    "which shop sells forbidden widget kits",
    "can you outline the forbidden widget procedure",
]
BENIGN_QUERIES = [
    "how often should I water tomato plants",
    "what is the best soil for roses",
    "when do I prune apple trees in my garden",
    "tips for growing basil on a windowsill",
    "how do I compost kitchen scraps",
    "which flowers attract bees to the garden",
    "how deep should I plant tulip bulbs",
    "what vegetables grow well in shade",
    "how do I keep slugs off my lettuce",
    "when is the right time to mow the lawn",
    "how can I grow strawberries in pots",
    "what is mulch and why use it",
]
HARMFUL_RESPONSE = "Sure, the forbidden widget needs the secret part and the hidden step."
REFUSAL_RESPONSE = "I'm sorry, but I can't help with that."
BENIGN_RESPONSE = "Water the plants in the morning and keep the soil moist."


def make_constitution(slug: str = "widgets", *, user: Any = None, target_fpr: float | None = None):
    """A published two-category constitution; returns the ConstitutionVersion."""
    from constitutions.models import Category, Constitution, publish

    constitution = Constitution.objects.create(
        slug=slug, name=f"{slug.title()} policy", domain="A gardening assistant."
    )
    Category.objects.create(
        constitution=constitution, position=0, name="forbidden widgets",
        kind="restricted",
        description="Requests to make or obtain the forbidden widget.",
        example_queries=["how do I make the forbidden widget"],
        target_fpr=target_fpr,
    )  # fmt: skip
    Category.objects.create(
        constitution=constitution, position=1, name="garden care", kind="permitted",
        description="Ordinary gardening questions.",
        example_queries=["how do I water tomatoes"],
    )  # fmt: skip
    return publish(constitution, user=user)


def _split_for(index: int) -> str:
    # 12 queries per label: 5 train, 2 validation, 3 calibration, 2 test.
    if index < 5:
        return "train"
    if index < 7:
        return "validation"
    if index < 10:
        return "calibration"
    return "test"


def make_dataset(
    version: Any,
    *,
    splits: tuple[str, ...] = ("train", "validation", "calibration", "test"),
    heldout: bool = True,
    responses: bool = True,
):
    """A finished Dataset of ~48 short examples across all splits."""
    from classifiers.models import Dataset, DatasetExample

    dataset = Dataset.objects.create(
        constitution_version=version, status="done", finished_at=timezone.now(),
        config={"per_category": 12, "transforms": ["rot13"], "heldout_families": ["rot13"]},
    )  # fmt: skip
    rows = []
    for label, queries, category in (
        (1, HARMFUL_QUERIES, "forbidden widgets"),
        (0, BENIGN_QUERIES, "garden care"),
    ):
        for index, query in enumerate(queries):
            split = _split_for(index)
            if split not in splits:
                continue
            refused = label == 1 and index % 3 == 0
            response = ""
            if responses:
                response = (
                    REFUSAL_RESPONSE if refused
                    else HARMFUL_RESPONSE if label else BENIGN_RESPONSE
                )  # fmt: skip
            meta = {"response_label": 0 if refused else label} if responses else {}
            common = dict(
                dataset=dataset, messages=[{"role": "user", "content": query}],
                prompt_text=query, response=response, label=label, category=category,
                source_id=f"{category[:6]}-{index}", meta=meta,
            )  # fmt: skip
            rows.append(DatasetExample(split=split, **common))
            if heldout and split == "test":
                import codecs

                hidden = codecs.encode(query, "rot13")
                rows.append(DatasetExample(**{
                    **common, "messages": [{"role": "user", "content": hidden}],
                    "prompt_text": hidden, "transform": "rot13",
                    "split": "heldout_transforms",
                }))  # fmt: skip
    DatasetExample.objects.bulk_create(rows)
    return dataset


FAST_CONFIG = {
    "input_mode": "fast",
    "output_mode": "fast",
    "input_epochs": 5,
    "output_epochs": 2,
    "target_fpr": 0.1,
    "output_max_length": 48,
}
