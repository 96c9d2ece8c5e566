"""Concurrent guarded streams, batched vs not: `python -m bench concurrent --json OUT`.

N clients ask the real generator (SmolLM2-135M-Instruct) for a guarded reply at the
same moment (greedy, fixed length, halting off), the way N playground sessions or
API streams do. Two ways to serve them:
  threads   each request generates on its own thread with `generate_with_scores`
            (one forward per token per request; what serving did before batching);
  batched   every request goes through one `ContinuousBatcher` (one forward per
            step for all of them).
The two modes alternate each repeat, so drifting machine load hits both alike. The
result is ratios measured in one run: aggregate tokens/s, and the time to each
client's first token and to its last.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from classifiers.ml.device import pick_device
from classifiers.ml.output.model import load_backbone
from classifiers.ml.output.value_head import CausalLMWithValueHead
from classifiers.ml.serving.batching import ContinuousBatcher
from classifiers.ml.serving.stream import generate_with_scores
from classifiers.ml.serving.tokens import TokenScore

PROMPTS = [
    "Tell me about vaccines.",
    "How do plants turn sunlight into food?",
    "Write a short poem about the sea.",
    "What is the capital of France and why is it famous?",
    "Explain how a bicycle gear works.",
    "Give me three tips for a job interview.",
    "Why is the sky blue?",
    "How do I make a cup of green tea?",
    "What did the Romans eat for breakfast?",
    "Summarise the rules of chess in two sentences.",
    "How does a refrigerator keep food cold?",
    "Name some good habits for sleeping well.",
    "What is a prime number?",
    "How do bees make honey?",
    "Describe a sunset over the mountains.",
    "What should I pack for a weekend hike?",
]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _serve(
    clients: list[list[dict[str, str]]],
    stream: Callable[[list[dict[str, str]]], Iterator[TokenScore]],
) -> dict[str, Any]:
    """Start every client at once; time each one's first and last token."""
    start = threading.Barrier(len(clients) + 1)
    first: list[float] = [0.0] * len(clients)
    last: list[float] = [0.0] * len(clients)
    tokens: list[list[int]] = [[] for _ in clients]

    def client(i: int) -> None:
        start.wait()
        t0 = time.perf_counter()
        for token in stream(clients[i]):
            if not tokens[i]:
                first[i] = time.perf_counter() - t0
            tokens[i].append(token.token_id)
        last[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    start.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "tokens": tokens, "first_s": first, "last_s": last}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench concurrent")
    parser.add_argument("--model-dir", default=None, help="generator folder")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--device", default=None, help="cuda / cpu (default: auto)")
    args = parser.parse_args(argv or [])
    device = pick_device(args.device)
    if args.model_dir is None:
        from classifiers.ml.registry import generator_dir

        args.model_dir = str(generator_dir())
    lm, tokenizer = load_backbone(args.model_dir, device)
    lm.requires_grad_(False)
    guarded = CausalLMWithValueHead(lm).eval()  # random head: weights don't change cost
    batcher = ContinuousBatcher(lm, tokenizer, max_batch=args.max_batch)
    clients = [[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}] for i in range(args.clients)]
    options = dict(max_new_tokens=args.new_tokens, halt=False)

    modes: dict[str, Callable[[list[dict[str, str]]], Iterator[TokenScore]]] = {
        "threads": lambda m: generate_with_scores(guarded, tokenizer, m, **options),
        "batched": lambda m: batcher.stream(m, guard=guarded, **options),
    }
    _serve(clients[:2], modes["threads"])  # warm-up
    _serve(clients[:2], modes["batched"])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in modes}
    names = list(modes)
    for repeat in range(args.repeats):
        for name in names[repeat % 2 :] + names[: repeat % 2]:
            runs[name].append(_serve(clients, modes[name]))
    batcher.close()

    summary: dict[str, Any] = {}
    for name, results in runs.items():
        total_tokens = sum(len(t) for r in results for t in r["tokens"])
        firsts = [f for r in results for f in r["first_s"]]
        lasts = [x for r in results for x in r["last_s"]]
        summary[name] = {
            "tokens_per_s": total_tokens / sum(r["wall_s"] for r in results),
            "first_token_p50_ms": 1000 * statistics.median(firsts),
            "first_token_p95_ms": 1000 * _percentile(firsts, 0.95),
            "reply_p50_s": statistics.median(lasts),
        }
    same = all(
        a["tokens"] == b["tokens"] for a, b in zip(runs["threads"], runs["batched"], strict=True)
    )
    return {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "clients": args.clients,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "max_batch": args.max_batch,
        "modes": summary,
        "batched_over_threads_tokens_per_s": summary["batched"]["tokens_per_s"]
        / summary["threads"]["tokens_per_s"],
        "mean_batch": batcher.stats.mean_batch,
        # Greedy, halting off: batching must not change a single token.
        "same_tokens": same,
    }
