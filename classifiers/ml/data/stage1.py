"""Stage I synthetic data: queries per constitution category, then responses.

Pipeline (after Constitutional Classifiers): for every constitution category a chat
generator writes user queries from a few-shot prompt built from the category's
natural-language description (data/prompts.py); queries are cleaned and filtered
(data/filters.py: refusals, degenerate text, near-duplicates) and optionally
answered. data/augment.py then makes variants and data/splits.py splits them.

Labels: `Example.label` comes from the category kind and is what the INPUT classifier
learns (a harmful request stays harmful even if the generator refused it). The
OUTPUT classifier judges the response instead, so each example also carries
`meta["response_label"]`: the category label, except that a refusal is benign (0),
because a refusal contains nothing harmful and teaching the output classifier to
flag refusals would make it key on topic words instead of harmful content. Use
`response_label(example)` to read it.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from typing import Any

from classifiers.ml.data.dedupe import MinHashDeduper
from classifiers.ml.data.filters import (
    Embedder,
    RelevanceFilter,
    clean_query,
    is_degenerate,
    is_refusal,
    rejection_reason,
)
from classifiers.ml.data.prompts import (
    GenerateConfig,
    pick_opener,
    query_prompt,
    response_prompt,
    with_opener,
)
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
# Stage I


def _report(
    on_progress: ProgressCallback | None,
    stage: str,
    done: int,
    total: int,
    **extra: Any,
) -> None:
    if on_progress is not None:
        on_progress(stage=stage, done=done, total=total, **extra)


def _derive_seed(*parts: int) -> int:
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + part) % 2**31
    return seed


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-") or "category"


def generate_stage1(
    constitution: ConstitutionSpec,
    generator: ChatGenerator,
    cfg: GenerateConfig,
    *,
    on_progress: ProgressCallback | None = None,
    should_cancel: ShouldCancel | None = None,
    stats: dict[str, int] | None = None,
    embed: Embedder | None = None,
) -> list[Example]:
    """Author examples + generated queries (+ responses) for every category.

    `stats`, when given, is filled with counters (kept, rejected_<reason>, ...).
    `embed` (sentence embeddings) enables the RelevanceFilter.
    """
    stats = stats if stats is not None else {}
    relevance = (
        RelevanceFilter(constitution, embed, cfg.min_relevance) if embed else None
    )
    counter: Counter[str] = Counter()
    rng = random.Random(cfg.seed)
    continuation = bool(getattr(generator, "continues_replies", False))
    # One deduper across ALL categories: the same query under two categories would
    # get two labels, and author examples must never be re-generated as new ones.
    deduper = MinHashDeduper(threshold=cfg.dedupe_threshold)
    # Per category: (query, "author" | "generated", prefilled opener or None).
    kept: list[list[tuple[str, str, str | None]]] = []
    chosen = [
        not cfg.only_categories or c.name in cfg.only_categories
        for c in constitution.categories
    ]
    for category, wanted in zip(constitution.categories, chosen, strict=True):
        authored = [q.strip() for q in category.example_queries if q.strip()]
        for query in authored:
            deduper.add_if_new(query)
        kept.append([(q, "author", None) for q in authored] if wanted else [])
    total = sum(
        max(cfg.queries_for(c.kind), len(k))
        for c, k, wanted in zip(constitution.categories, kept, chosen, strict=True)
        if wanted
    )
    done = sum(len(k) for k in kept)
    _report(on_progress, "queries", done, total)

    for ci, category in enumerate(constitution.categories):
        if not chosen[ci]:
            continue
        queries = kept[ci]
        wanted_queries = cfg.queries_for(category.kind)
        for round_index in range(cfg.max_rounds):
            need = wanted_queries - len(queries)
            if need <= 0:
                break
            check_cancelled(should_cancel)
            pool = [q for q, *_ in queries]
            # Ask for more than needed: small generators waste many samples.
            openers = [
                pick_opener(category, constitution, rng, cfg.opener_share)
                if continuation and pool  # no pool: the instruction prompt
                else None
                for _ in range(min(cfg.batch_size, 2 * need))
            ]
            prompts = [
                query_prompt(
                    category,
                    constitution,
                    k_examples=cfg.k_examples,
                    rng=rng,
                    examples=pool,
                    continuation=continuation,
                    opener=opener,
                )
                for opener in openers
            ]
            outputs = generator.chat(
                prompts,
                max_new_tokens=cfg.max_new_tokens_query,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                seed=_derive_seed(cfg.seed, ci, round_index),
            )
            cleaned = [
                clean_query(with_opener(opener, o), max_chars=cfg.max_query_chars)
                for opener, o in zip(openers, outputs, strict=True)
            ]
            reasons = [rejection_reason(query, cfg) for query in cleaned]
            if relevance is not None:
                candidates = [q for q, r in zip(cleaned, reasons, strict=True) if r is None]
                verdicts = iter(relevance.reasons(candidates, ci))
                reasons = [next(verdicts) if r is None else r for r in reasons]
            for query, reason, opener in zip(cleaned, reasons, openers, strict=True):
                counter["candidates"] += 1
                if opener is not None:
                    counter["candidates_prefilled"] += 1
                if reason is None and not deduper.add_if_new(query):
                    reason = "duplicate"
                if reason is not None:
                    counter[f"rejected_{reason}"] += 1
                    continue
                if len(queries) < wanted_queries:
                    queries.append((query, "generated", opener))
                    if opener is not None:
                        counter["kept_prefilled"] += 1
                    done += 1
            _report(on_progress, "queries", done, total, category=category.name)
        if len(queries) < wanted_queries:
            counter["shortfall"] += wanted_queries - len(queries)
            logger.warning(
                "category %r: only %d of %d queries after %d rounds",
                category.name,
                len(queries),
                wanted_queries,
                cfg.max_rounds,
            )

    if counter["shortfall"]:  # let the progress bar finish at what was reached
        _report(on_progress, "queries", done, done, shortfall=counter["shortfall"])
    examples = _make_examples(constitution, kept, generator.name)
    counter["kept"] = len(examples)
    if cfg.responses:
        _add_responses(
            examples,
            constitution,
            generator,
            cfg,
            counter,
            on_progress=on_progress,
            should_cancel=should_cancel,
        )
    stats.update(counter)
    return examples


def _make_examples(
    constitution: ConstitutionSpec,
    kept: list[list[tuple[str, str, str | None]]],
    generator: str,
) -> list[Example]:
    examples: list[Example] = []
    used_slugs: set[str] = set()
    for ci, (category, queries) in enumerate(
        zip(constitution.categories, kept, strict=True)
    ):
        slug = slugify(category.name)
        if slug in used_slugs:  # two names that slugify alike still get unique ids
            slug = f"{slug}-{ci}"
        used_slugs.add(slug)
        for i, (query, source, opener) in enumerate(queries):
            meta: dict[str, Any] = {"source": source}
            if source == "generated":
                meta["generator"] = generator
            if opener:
                meta["opener"] = opener
            examples.append(
                Example(
                    messages=[{"role": "user", "content": query}],
                    response="",
                    label=category.label,
                    category=category.name,
                    source_id=f"{slug}-{i:04d}",
                    meta=meta,
                )
            )
    return examples


def _add_responses(
    examples: list[Example],
    constitution: ConstitutionSpec,
    generator: ChatGenerator,
    cfg: GenerateConfig,
    counter: Counter[str],
    *,
    on_progress: ProgressCallback | None,
    should_cancel: ShouldCancel | None,
) -> None:
    """Fill `response`; author responses are paired with author queries by index."""
    by_name = {c.name: c for c in constitution.categories}
    author_index: Counter[str] = Counter()
    todo: list[Example] = []
    for ex in examples:
        if ex.meta["source"] == "author":
            i = author_index[ex.category]
            author_index[ex.category] += 1
            responses = by_name[ex.category].example_responses
            if i < len(responses) and responses[i].strip():
                set_response(ex, responses[i].strip(), "author")
                continue
        todo.append(ex)
    total, done = len(examples), len(examples) - len(todo)
    _report(on_progress, "responses", done, total)
    for attempt in range(cfg.response_retries + 1):
        retry: list[Example] = []
        for start in range(0, len(todo), cfg.batch_size):
            check_cancelled(should_cancel)
            chunk = todo[start : start + cfg.batch_size]
            outputs = generator.chat(
                [response_prompt(ex.messages[-1]["content"]) for ex in chunk],
                max_new_tokens=cfg.max_new_tokens_response,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                seed=_derive_seed(cfg.seed, 7919, attempt, start),
            )
            for ex, text in zip(chunk, outputs, strict=True):
                if is_degenerate(text):
                    retry.append(ex)
                    continue
                set_response(ex, text.strip(), "generated")
                done += 1
            _report(on_progress, "responses", done, total)
        todo = retry
        if not todo:
            break
    for ex in todo:  # still degenerate: keep the query for the input classifier
        ex.meta["response_dropped"] = "degenerate"
        counter["responses_dropped"] += 1
        done += 1
    counter["refused"] = sum(bool(ex.meta.get("refused")) for ex in examples)
    _report(on_progress, "responses", done, total)


def set_response(ex: Example, text: str, source: str) -> None:
    ex.response = text
    ex.meta["response_source"] = source
    refused = is_refusal(text)
    ex.meta["refused"] = refused
    # A refusal is benign output whatever the query was (see the module docstring).
    ex.meta["response_label"] = 0 if refused else ex.label


def response_label(example: Example) -> int | None:
    """The output classifier's target for this example; None when no response."""
    if not example.response:
        return None
    return int(example.meta.get("response_label", example.label))
