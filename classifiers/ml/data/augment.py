"""Stage II augmentation of a dataset: `augment_examples`.

Every example gets `variants_per_example` variants, each a seeded chain of the
transforms in data/transforms.py (rewrites in data/rewrites.py); LLM transforms
(paraphrase, translate) are batched into `llm.chat` calls of LLM_BATCH_SIZE
conversations. Benign and harmful examples go through exactly the same transforms,
so the classifier has to learn intent rather than "encoded means harmful".
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from classifiers.ml.data.rewrites import last_user_index
from classifiers.ml.data.transforms import (
    LLMTransform,
    Transform,
    resolve_transforms,
    sample_chain,
)
from classifiers.ml.types import ChatGenerator, Example, Message, check_cancelled

logger = logging.getLogger(__name__)


LLM_BATCH_SIZE = 16  # conversations per llm.chat call in augment_examples


@dataclass
class _Variant:
    """One variant under construction: where it is in its chain, its own rng."""

    example: Example
    chain: list[str]
    rng: random.Random
    position: int = 0
    pending_meta: dict = field(default_factory=dict)
    failed: bool = False


def _run_llm_batch(
    batch: list[_Variant],
    resolved: dict[str, Transform],
    llm: ChatGenerator,
    *,
    seed: int,
) -> None:
    """One llm.chat call for the next (LLM) step of every variant in `batch`."""
    steps: list[LLMTransform] = []
    conversations: list[list[Message]] = []
    for variant in batch:
        transform = resolved[variant.chain[variant.position]]
        assert isinstance(transform, LLMTransform)
        last = last_user_index(variant.example.messages)
        conversation, variant.pending_meta = transform.build_request(
            variant.example.messages[last]["content"], variant.rng
        )
        steps.append(transform)
        conversations.append(conversation)
    replies = llm.chat(conversations, max_new_tokens=128, temperature=0.7, seed=seed)
    for variant, transform, reply in zip(batch, steps, replies, strict=True):
        result = transform.finish(variant.example, reply, variant.pending_meta)
        if result is None:
            variant.failed = True
            logger.info(
                "dropping %s variant: unusable reply %r", transform.name, reply[:80]
            )
            continue
        variant.example = result
        variant.position += 1


def augment_examples(
    examples: Sequence[Example],
    *,
    transforms: Sequence[str],
    variants_per_example: int,
    seed: int,
    llm: ChatGenerator | None = None,
    templates: Sequence[str] = (),
    max_chain: int = 2,
    languages: Sequence[str] | None = None,
    llm_batch_size: int = LLM_BATCH_SIZE,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[Example]:
    """`variants_per_example` new variants per example (originals not included).

    Each variant is a seeded random chain of 1..max_chain transforms, never two of
    one family. Rule-based steps run immediately; LLM steps of all variants are
    gathered and sent to `llm.chat` in batches of `llm_batch_size`. Variants whose
    LLM reply is unusable (refusal, echo, empty) are dropped and logged. The same
    inputs and seed always give the same list.
    """
    if not transforms:
        raise ValueError("augment_examples needs at least one transform name")
    resolved = {
        t.name: t for t in resolve_transforms(list(dict.fromkeys(transforms)), llm, languages)
    }
    rng = random.Random(seed)
    variants = [
        _Variant(
            example,
            sample_chain(transforms, rng, max_chain),
            random.Random(rng.getrandbits(64)),
        )
        for example in examples
        for _ in range(variants_per_example)
    ]
    total = len(variants)
    batch_index = 0

    def check_cancel() -> None:
        check_cancelled(should_cancel, "augmentation cancelled")

    while True:
        # Advance every variant through rule-based steps up to its next LLM step.
        for variant in variants:
            while not variant.failed and variant.position < len(variant.chain):
                transform = resolved[variant.chain[variant.position]]
                if transform.needs_llm:
                    break
                variant.example = transform.apply(
                    variant.example, variant.rng, templates=templates
                )
                variant.position += 1
        waiting = [v for v in variants if not v.failed and v.position < len(v.chain)]
        done = total - len(waiting)
        if on_progress is not None:
            on_progress(stage="augment", done=done, total=total)
        if not waiting:
            break
        check_cancel()
        for start in range(0, len(waiting), llm_batch_size):
            assert llm is not None  # resolve_transforms guarantees it when an LLM step exists
            batch = waiting[start : start + llm_batch_size]
            _run_llm_batch(batch, resolved, llm, seed=seed + batch_index)
            batch_index += 1
            check_cancel()
    out = [v.example for v in variants if not v.failed]
    if len(out) < total:
        logger.info(
            "augment_examples: %d of %d variants dropped", total - len(out), total
        )
    return out
