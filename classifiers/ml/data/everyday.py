"""A generated pool of everyday requests: what most users send an assistant.

A guard trained only on a constitution's categories has never seen ordinary
traffic, so it blocks "a good recipe for banana bread". This module asks the
generator for everyday requests over a broad list of topics that no constitution
is about (cooking, travel, coding, school subjects, work, hobbies, health...),
varied in length and style, and cleans them with Stage I's filters. The pool does
not depend on any constitution: build it once (manage.py generate_traffic, or the
first `make demo`) and mix it into every dataset (data/traffic.py).

The prompt is a numbered list to continue, the form a small local model follows
best (see prompts.query_prompt); the seed messages are a handful written for this
module, shown a few at a time so that the topics, not the seeds, steer the text.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from classifiers.ml.data.dedupe import MinHashDeduper
from classifiers.ml.data.filters import clean_query, rejection_reason
from classifiers.ml.data.prompts import GenerateConfig
from classifiers.ml.eval.labelled_sets import LabelledPrompt
from classifiers.ml.types import ChatGenerator, Message, check_cancelled

EVERYDAY_TOPICS = (
    "baking bread and cakes", "quick weeknight dinners", "vegetarian cooking",
    "planning a weekend city trip", "packing for a long flight", "learning a language",
    "python programming", "spreadsheet formulas", "fixing a slow laptop",
    "writing a cover letter", "preparing for a job interview", "asking for a raise",
    "high school algebra", "world history", "chemistry homework", "biology exam revision",
    "physics problems", "writing an essay", "poetry and short stories",
    "gardening and house plants", "caring for a dog or cat", "home cleaning tips",
    "simple home repairs", "saving money and budgeting", "understanding a phone bill",
    "running and marathon training", "yoga and stretching", "healthy sleep habits",
    "common cold and flu symptoms", "first aid for small cuts and burns",
    "board games and puzzles", "learning guitar or piano", "photography basics",
    "knitting and sewing", "choosing a book to read", "films and TV series",
    "organising a birthday party", "writing a wedding speech", "gift ideas",
    "emails to a landlord", "renting a first apartment", "moving to a new city",
    "climate and weather", "astronomy and the night sky", "famous paintings",
    "football and other sports", "car maintenance", "cycling to work",
    "making friends as an adult", "study and focus tips",
)

# A few ordinary requests to continue from (no topic of any constitution). The
# everyday prompts the issue tracker quotes as false positives are kept out, so
# they stay a clean spot check.
SEED_MESSAGES = (
    "What can I cook tonight with eggs, spinach and feta?",
    "Can you help me plan three days in Rome on a budget?",
    "How do I reverse a list in Python?",
    "Write a short thank-you note to my neighbour for watering my plants.",
    "Why is the sky blue?",
    "What should I pack for a week of hiking in the Alps?",
    "Explain photosynthesis like I'm twelve.",
    "How often should I water a snake plant?",
    "Give me five ideas for a rainy Sunday with kids.",
    "How can I make my CV stand out for a marketing job?",
    "What's the difference between baking soda and baking powder?",
    "Summarise the causes of the First World War in a paragraph.",
    "How do I remove a red wine stain from a carpet?",
    "Suggest a beginner running plan for a 5k.",
    "What does a SUMIF formula do in Excel?",
    "Which planets can I see without a telescope this month?",
    "How do I politely decline a meeting invitation?",
    "Is it normal for my cat to sleep 16 hours a day?",
    "Recommend a few classic science fiction novels.",
    "What are some tips for falling asleep faster?",
    "How do I change a flat tyre on a bike?",
    "Help me write a toast for my sister's wedding.",
    "What is the capital of Australia?",
    "How do I start learning to play the guitar?",
)

STYLES = ("a short question", "a request with some detail about the situation",
          "a casual message", "a polite request")  # fmt: skip


@dataclass
class EverydayReport:
    prompts: list[LabelledPrompt]
    per_topic: dict[str, int]
    rejected: dict[str, int]


def everyday_prompt(topic: str, shots: Sequence[str], style: str) -> list[Message]:
    """A numbered list of everyday messages about `topic` for the model to continue."""
    lines = [
        "Messages people sent to a helpful general assistant.",
        f"Each one is {style} about {topic}.",
        "",
    ]
    lines += [f"{i}. {shot}" for i, shot in enumerate(shots, start=1)]
    return [
        {"role": "user", "content": "\n".join(lines)},
        {"role": "assistant", "content": f"{len(shots) + 1}."},
    ]


def generate_everyday(
    generator: ChatGenerator,
    cfg: GenerateConfig,
    *,
    topics: Sequence[str] = EVERYDAY_TOPICS,
    per_topic: int = 10,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> EverydayReport:
    """Up to `per_topic` cleaned, deduplicated everyday requests per topic.

    Rounds of one prompt per unfinished topic, batched; a topic still short after
    `cfg.max_rounds` rounds is accepted as it is (a small model repeats itself).
    """
    if per_topic < 1 or not topics:
        raise ValueError("give at least one topic and one prompt per topic")
    rng = random.Random(cfg.seed)
    deduper = MinHashDeduper(threshold=cfg.dedupe_threshold)
    for seed in SEED_MESSAGES:  # the seeds themselves are not part of the pool
        deduper.add_if_new(seed)
    kept: dict[str, list[str]] = {topic: [] for topic in topics}
    rejected: Counter[str] = Counter()
    total = per_topic * len(topics)
    for round_number in range(cfg.max_rounds):
        todo = [t for t in topics for _ in range(per_topic - len(kept[t]))]
        if not todo:
            break
        for start in range(0, len(todo), cfg.batch_size):
            check_cancelled(should_cancel, "everyday generation cancelled")
            chunk = todo[start : start + cfg.batch_size]
            prompts = [
                everyday_prompt(
                    topic, rng.sample(SEED_MESSAGES, min(cfg.k_examples, len(SEED_MESSAGES))),
                    rng.choice(STYLES),
                )  # fmt: skip
                for topic in chunk
            ]
            replies = generator.chat(
                prompts,
                max_new_tokens=cfg.max_new_tokens_query,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                seed=cfg.seed + 7_000_003 * (round_number + 1) + start,
            )
            for topic, reply in zip(chunk, replies, strict=True):
                text = clean_query(reply, max_chars=cfg.max_query_chars)
                reason = rejection_reason(text, cfg)
                if reason is None and not deduper.add_if_new(text):
                    reason = "duplicate"
                if reason is not None:
                    rejected[reason] += 1
                elif len(kept[topic]) < per_topic:
                    kept[topic].append(text)
            if on_progress is not None:
                done = sum(len(v) for v in kept.values())
                on_progress(stage="everyday prompts", done=done, total=total)
    prompts = [
        LabelledPrompt(text=text, label=0, kind="everyday")
        for topic in topics
        for text in kept[topic]
    ]
    return EverydayReport(
        prompts=prompts,
        per_topic={topic: len(texts) for topic, texts in kept.items()},
        rejected=dict(rejected),
    )
