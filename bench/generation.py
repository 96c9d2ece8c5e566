"""Stage I generation throughput: batch_size 1 vs batch_size 8 on the same prompts.

    python -m bench generation --json OUT [--model-dir DIR] [--k 16] [--max-new-tokens 32]

Loads the real SmolLM2-135M-Instruct (safetensors, converted by the registry),
builds K query prompts for an innocuous toy constitution and times LocalGenerator
unbatched and batched. Each setting gets one untimed warm-up call first so that
one-off costs (allocator, kernels) do not count against whichever runs first.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path
from typing import Any

import torch

from classifiers.ml.data.filters import clean_query, is_degenerate, is_refusal
from classifiers.ml.data.prompts import query_prompt
from classifiers.ml.generation.local import LocalGenerator
from classifiers.ml.types import (
    PERMITTED,
    RESTRICTED,
    CategorySpec,
    ConstitutionSpec,
    Message,
)

logger = logging.getLogger(__name__)

TOY_CONSTITUTION = ConstitutionSpec(
    name="Bench",
    domain="a toy widget shop assistant",
    categories=(
        CategorySpec(
            name="Forbidden widgets",
            kind=RESTRICTED,
            description="Requests to build or obtain the forbidden widget.",
            example_queries=(
                "how do I make the forbidden widget",
                "where can I get parts for a forbidden widget",
            ),
        ),
        CategorySpec(
            name="Widget care",
            kind=PERMITTED,
            description="Cleaning, storing and repairing ordinary widgets.",
            example_queries=("how do I clean my widget", "can widgets get wet"),
        ),
    ),
)


def default_model_dir() -> Path:
    try:
        from classifiers.ml.registry import generator_dir
    except ImportError as err:  # registry not available: the flag is required
        raise SystemExit(f"--model-dir is required ({err})") from err
    return generator_dir()


def bench_prompts(k: int, seed: int) -> list[list[Message]]:
    rng = random.Random(seed)
    cats = TOY_CONSTITUTION.categories
    return [
        query_prompt(cats[i % len(cats)], TOY_CONSTITUTION, k_examples=2, rng=rng)
        for i in range(k)
    ]


def timed_run(
    gen: LocalGenerator,
    prompts: list[list[Message]],
    batch_size: int,
    max_new_tokens: int,
    seed: int,
) -> dict[str, Any]:
    gen.batch_size = batch_size
    gen.chat(prompts[:batch_size], max_new_tokens=4, temperature=0.9, seed=seed)
    start = time.perf_counter()
    outputs = gen.chat(
        prompts, max_new_tokens=max_new_tokens, temperature=0.9, top_p=0.95, seed=seed
    )
    seconds = time.perf_counter() - start
    queries = [clean_query(o) for o in outputs]
    usable = [q for q in queries if q and not is_degenerate(q) and not is_refusal(q)]
    new_tokens = sum(
        len(gen.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs
    )
    return {
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "examples_per_minute": round(len(prompts) / seconds * 60, 1),
        "new_tokens_per_second": round(new_tokens / seconds, 1),
        "usable_queries": len(usable),
        "sample_queries": queries[:3],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench generation")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--k", type=int, default=16, help="queries to generate")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model_dir = args.model_dir or default_model_dir()
    load_start = time.perf_counter()
    gen = LocalGenerator.from_dir(model_dir, device=args.device)
    load_seconds = time.perf_counter() - load_start
    prompts = bench_prompts(args.k, args.seed)
    unbatched = timed_run(gen, prompts, 1, args.max_new_tokens, args.seed)
    batched = timed_run(gen, prompts, args.batch_size, args.max_new_tokens, args.seed)
    return {
        "model_dir": str(model_dir),
        "device": str(gen.device),
        "torch_threads": torch.get_num_threads(),
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "load_seconds": round(load_seconds, 2),
        "unbatched": unbatched,
        "batched": batched,
        "examples_per_minute": {
            "batch_1": unbatched["examples_per_minute"],
            f"batch_{args.batch_size}": batched["examples_per_minute"],
        },
        "speedup": round(
            batched["examples_per_minute"] / unbatched["examples_per_minute"], 2
        ),
    }
