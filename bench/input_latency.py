"""Input-classifier latency: p50/p95 for a short and a ~512-token prompt, batched vs
unbatched throughput.

    python -m bench input_latency [--repeats 30] [--batch 32] [--device cuda]

The classifier is all-MiniLM-L6-v2 + a (randomly initialised) head with
max_length 512; latency does not depend on the head's weights. `score_texts` is
timed as served, i.e. including the canonical views (decoded base64/ROT13, folded
homoglyphs, ...); `canonical=False` numbers are given beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from classifiers.ml import registry
from classifiers.ml.input.model import InputClassifier, InputClassifierConfig
from classifiers.ml.input.scoring import score_texts

SHORT = "how do I keep slugs off my lettuce"
SENTENCE = "The gardener waters the tomato plants every morning before the sun gets hot. "


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench input_latency")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    backbone = registry.encoder_dir()
    torch.manual_seed(0)
    cfg = InputClassifierConfig(backbone_dir=str(backbone), categories=["a", "b"],
                                max_length=512)  # fmt: skip
    model = InputClassifier(cfg).eval().to(args.device)
    tokenizer = AutoTokenizer.from_pretrained(str(backbone))
    long_text = SENTENCE * 40
    while len(tokenizer(long_text)["input_ids"]) > 512:
        long_text = long_text[: int(len(long_text) * 0.95)]
    result: dict[str, Any] = {"device": args.device, "threads": torch.get_num_threads(),
                              "long_tokens": len(tokenizer(long_text)["input_ids"])}  # fmt: skip
    for name, text in (("short", SHORT), ("long_512", long_text)):
        for canonical in (True, False):
            score_texts(model, tokenizer, [text], canonicalize=canonical)  # warm-up
            samples = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                score_texts(model, tokenizer, [text], canonicalize=canonical)
                samples.append(time.perf_counter() - started)
            result[f"{name}{'' if canonical else '_no_views'}"] = _percentiles(samples)
    texts = [f"{SHORT} number {i}" for i in range(args.batch)]
    started = time.perf_counter()
    for text in texts:
        score_texts(model, tokenizer, [text])
    unbatched = args.batch / (time.perf_counter() - started)
    started = time.perf_counter()
    score_texts(model, tokenizer, texts, batch_size=args.batch)
    batched = args.batch / (time.perf_counter() - started)
    result["short_throughput"] = {"unbatched_per_s": unbatched, "batched_per_s": batched,
                                  "batched_over_unbatched": batched / unbatched}  # fmt: skip
    return result
