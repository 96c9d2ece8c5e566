"""Stage I prompt styles: instruction vs list continuation, on the same categories.

    python -m bench stage1_prompts --json OUT [--per-category 16] [--categories 0,2,4,6]

Loads the real SmolLM2-135M-Instruct and MiniLM, builds the demo cbrn-demo
constitution from its YAML, and asks the generator for `--per-category` queries
per category twice: with the instruction prompt (what chat endpoints get) and with
the numbered-list prompt whose reply is prefilled with the next number (what the
local generator gets). Both go through Stage I's own filters (`_rejection`, then the
RelevanceFilter), so "kept" is what a dataset would keep. Same sampling settings
and seeds for both.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import yaml

from classifiers.ml import registry
from classifiers.ml.data.filters import RelevanceFilter, clean_query, rejection_reason
from classifiers.ml.data.prompts import GenerateConfig, query_prompt
from classifiers.ml.generation.local import LocalGenerator
from classifiers.ml.input.model import sentence_embedder
from classifiers.ml.types import CategorySpec, ConstitutionSpec

DEMO_YAML = Path(__file__).parents[1] / "constitutions" / "demo_data" / "cbrn-demo.yaml"


def demo_constitution(path: Path = DEMO_YAML) -> ConstitutionSpec:
    """The demo cbrn-demo constitution (or another YAML export) as a spec."""
    raw = yaml.safe_load(path.read_text())
    return ConstitutionSpec(
        name=raw["name"],
        domain=raw["domain"],
        categories=tuple(
            CategorySpec(
                name=c["name"],
                kind=c["kind"],
                description=c["description"],
                excludes=c.get("excludes") or "",
                example_queries=tuple(c["example_queries"]),
                languages=tuple(c.get("languages") or ()),
            )
            for c in raw["categories"]
        ),
    )


def run_style(
    gen: LocalGenerator,
    spec: ConstitutionSpec,
    relevance: RelevanceFilter,
    indexes: list[int],
    n: int,
    continuation: bool,
) -> dict[str, Any]:
    cfg = GenerateConfig(max_new_tokens_query=40)
    rng = random.Random(1)
    reasons: Counter[str] = Counter()
    samples: dict[str, list[str]] = {}
    start = time.perf_counter()
    for ci in indexes:
        category = spec.categories[ci]
        prompts = [
            query_prompt(category, spec, k_examples=cfg.k_examples, rng=rng,
                         continuation=continuation)
            for _ in range(n)
        ]  # fmt: skip
        outputs = gen.chat(
            prompts, max_new_tokens=cfg.max_new_tokens_query,
            temperature=cfg.temperature, top_p=cfg.top_p, seed=ci,
        )  # fmt: skip
        cleaned = [clean_query(o, max_chars=cfg.max_query_chars) for o in outputs]
        verdicts = [rejection_reason(q, cfg) for q in cleaned]
        passed = [q for q, r in zip(cleaned, verdicts, strict=True) if r is None]
        relevant = iter(relevance.reasons(passed, ci))
        verdicts = [next(relevant) if r is None else r for r in verdicts]
        reasons.update(r or "kept" for r in verdicts)
        samples[category.name] = [
            q for q, r in zip(cleaned, verdicts, strict=True) if r is None
        ][:3]
    total = n * len(indexes)
    return {
        "kept": reasons["kept"],
        "total": total,
        "kept_fraction": round(reasons["kept"] / total, 3),
        "reasons": dict(reasons),
        "seconds": round(time.perf_counter() - start, 1),
        "kept_samples": samples,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench stage1_prompts")
    parser.add_argument("--per-category", type=int, default=16)
    parser.add_argument("--categories", default="0,2,4,6", help="indexes in cbrn-demo")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = demo_constitution()
    indexes = [int(i) for i in args.categories.split(",")]
    gen = LocalGenerator.from_dir(registry.generator_dir(), batch_size=16)
    relevance = RelevanceFilter(
        spec, sentence_embedder(registry.encoder_dir()), GenerateConfig().min_relevance
    )
    instruction = run_style(gen, spec, relevance, indexes, args.per_category, False)
    continuation = run_style(gen, spec, relevance, indexes, args.per_category, True)
    return {
        "categories": [spec.categories[i].name for i in indexes],
        "per_category": args.per_category,
        "instruction": instruction,
        "continuation": continuation,
        "continuation_over_instruction_kept": round(
            continuation["kept"] / max(1, instruction["kept"]), 2
        ),
    }
