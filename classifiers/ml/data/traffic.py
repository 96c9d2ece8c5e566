"""Traffic pools: real or realistic user prompts as training and calibration data.

The constitution's permitted categories are not what users send: a guard that has
only seen them as negatives blocks "a recipe for banana bread". A traffic pool is a
named set of prompts of the kind a deployment sees (imported from a file of your
own, or recorded while a constitution ran in shadow mode), benign unless labelled.

`prepare_pool` cleans an import: whitespace trimmed, exact and near duplicates
(MinHash, the same deduper as Stage I) dropped, and each prompt given a split by a
hash of its normalised text, so the same prompt lands in the same split in every
pool and every dataset, and a test prompt never trains. The calibration share is
large on purpose: a threshold for a 1% false-positive rate needs ~500 benign
prompts (eval/intervals.py).

`pool_examples` turns a pool's prompts into Examples for a dataset: category
"traffic: <pool>", so every report has an over-refusal row per pool.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from classifiers.ml.data.dedupe import MinHashDeduper, normalise
from classifiers.ml.data.filters import is_degenerate
from classifiers.ml.data.prompts import GenerateConfig, response_prompt
from classifiers.ml.data.stage1 import set_response
from classifiers.ml.types import ChatGenerator, Example, check_cancelled

# Where a pool's prompts go. Calibration gets the largest share after training:
# thresholds are set there, and a 1% target needs hundreds of benign prompts.
POOL_SPLITS = {"train": 0.40, "validation": 0.10, "calibration": 0.35, "test": 0.15}
MAX_POOL_PROMPTS = 200_000  # an import larger than this is refused, not truncated
MAX_PROMPT_CHARS = 20_000
CATEGORY_PREFIX = "traffic: "
T = TypeVar("T")


@dataclass(frozen=True)
class PooledPrompt:
    text: str
    label: int  # 0 benign (the default for traffic), 1 harmful
    kind: str  # free-form: "everyday", "sensitive", "shadow: false_positive", ...
    split: str
    text_hash: str  # sha256 of the normalised text


@dataclass
class PreparedPool:
    prompts: list[PooledPrompt]
    stats: dict[str, Any] = field(default_factory=dict)


def text_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def split_for(hashed: str, fractions: dict[str, float] = POOL_SPLITS) -> str:
    """The split of a prompt, from its text hash: stable across pools and runs."""
    position = int(hashed[:12], 16) / float(16**12)  # uniform in [0, 1)
    edge = 0.0
    for name, share in fractions.items():
        edge += share
        if position < edge:
            return name
    return next(reversed(fractions))


def prepare_pool(
    prompts: Iterable[Any],  # anything with .text, .label, .kind (LabelledPrompt)
    *,
    near_duplicates: bool = True,
    known_hashes: frozenset[str] = frozenset(),
) -> PreparedPool:
    """Deduplicated prompts with their splits, and what was dropped and why.

    `known_hashes` are prompts the pool already holds (an import into an existing
    pool skips them). Raises ValueError for an import over MAX_POOL_PROMPTS.
    """
    deduper = MinHashDeduper() if near_duplicates else None
    seen = set(known_hashes)
    kept: list[PooledPrompt] = []
    dropped: Counter[str] = Counter()
    read = 0
    for prompt in prompts:
        read += 1
        if read > MAX_POOL_PROMPTS:
            raise ValueError(f"a pool holds at most {MAX_POOL_PROMPTS} prompts")
        text = " ".join(str(prompt.text).split())
        if not text:
            dropped["empty"] += 1
            continue
        if len(text) > MAX_PROMPT_CHARS:
            dropped["too long"] += 1
            continue
        hashed = text_hash(text)
        if hashed in seen:
            dropped["duplicate"] += 1
            continue
        if deduper is not None and not deduper.add_if_new(text):
            dropped["near duplicate"] += 1
            continue
        seen.add(hashed)
        kept.append(
            PooledPrompt(
                text=text, label=int(prompt.label), kind=str(prompt.kind or ""),
                split=split_for(hashed), text_hash=hashed,
            )  # fmt: skip
        )
    stats = {
        "read": read,
        "kept": len(kept),
        "dropped": dict(dropped),
        "splits": dict(Counter(p.split for p in kept)),
        "labels": {str(k): v for k, v in Counter(p.label for p in kept).items()},
        "kinds": dict(Counter(p.kind or "unspecified" for p in kept)),
    }
    return PreparedPool(prompts=kept, stats=stats)


def pool_category(pool_name: str) -> str:
    return f"{CATEGORY_PREFIX}{pool_name}"


def pool_examples(
    prompts: Sequence[PooledPrompt],
    *,
    pool_name: str,
    responses: Sequence[str] | None = None,
) -> list[Example]:
    """Examples for a dataset, one per prompt, in the prompt's own split.

    `responses` (one per prompt, "" for none) are the generator's replies, which
    the output classifier learns from and is calibrated on.
    """
    if responses is not None and len(responses) != len(prompts):
        raise ValueError("one response per prompt")
    examples = []
    for index, prompt in enumerate(prompts):
        examples.append(
            Example(
                messages=[{"role": "user", "content": prompt.text}],
                response=responses[index] if responses is not None else "",
                label=prompt.label,
                category=pool_category(pool_name),
                source_id=f"traffic-{prompt.text_hash[:16]}",
                meta={
                    "source": "traffic", "pool": pool_name, "kind": prompt.kind,
                    "split": prompt.split,
                },
            )  # fmt: skip
        )
    return examples


def sample_per_split(
    prompts: Sequence[PooledPrompt], limit: int, *, seed: int = 0
) -> list[PooledPrompt]:
    """At most `limit` prompts, taken from each split in proportion (deterministic:
    by text hash, salted with `seed`), so a big pool stays within a run's budget."""
    if len(prompts) <= limit:
        return list(prompts)

    def order(prompt: PooledPrompt) -> str:
        return hashlib.sha256(f"{seed}:{prompt.text_hash}".encode()).hexdigest()

    by_split: dict[str, list[PooledPrompt]] = {}
    for prompt in sorted(prompts, key=order):
        by_split.setdefault(prompt.split, []).append(prompt)
    chosen: list[PooledPrompt] = []
    for members in by_split.values():
        share = round(limit * len(members) / len(prompts))
        chosen += members[:share]
    return chosen[:limit]


def take_per_split(
    items: Sequence[T], count: int, *, split_of: Callable[[T], str], order_of: Callable[[T], str]
) -> tuple[list[T], list[T]]:
    """Exactly `count` items (all when fewer), each split getting its share by
    largest remainders, first by `order_of` within a split; returns (taken, rest),
    each in the items' own order. Datasets use it to choose which pool prompts get
    a generated reply and which a recorded one (datasets/traffic.py)."""
    if count >= len(items):
        return list(items), []
    by_split: dict[str, list[int]] = {}
    for i in sorted(range(len(items)), key=lambda i: order_of(items[i])):
        by_split.setdefault(split_of(items[i]), []).append(i)
    exact = {split: count * len(members) / len(items) for split, members in by_split.items()}
    shares = {split: int(value) for split, value in exact.items()}
    leftover = count - sum(shares.values())
    for split in sorted(exact, key=lambda s: exact[s] - shares[s], reverse=True)[:leftover]:
        shares[split] += 1
    taken = {i for split, members in by_split.items() for i in members[: shares[split]]}
    return (
        [item for i, item in enumerate(items) if i in taken],
        [item for i, item in enumerate(items) if i not in taken],
    )


def add_responses(
    examples: Sequence[Example],
    generator: ChatGenerator,
    cfg: GenerateConfig,
    *,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> int:
    """Fill each example's response with the generator's reply (one attempt; a
    degenerate reply leaves the prompt without one). Returns how many were filled."""
    filled = 0
    for start in range(0, len(examples), cfg.batch_size):
        check_cancelled(should_cancel, "traffic responses cancelled")
        chunk = examples[start : start + cfg.batch_size]
        outputs = generator.chat(
            [response_prompt(ex.messages[-1]["content"]) for ex in chunk],
            max_new_tokens=cfg.max_new_tokens_response,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=cfg.seed + 104729 + start,  # its own stream, apart from Stage I's
        )
        for example, text in zip(chunk, outputs, strict=True):
            if is_degenerate(text):
                example.meta["response_dropped"] = "degenerate"
                continue
            set_response(example, text.strip(), "generated")
            filled += 1
        if on_progress is not None:
            on_progress(
                stage="traffic responses", done=start + len(chunk), total=len(examples)
            )
    return filled
