"""Streaming guard cost: `python -m bench streaming [--model-dir DIR] --json OUT`.

On the real generator (SmolLM2-135M-Instruct), greedy, a fixed number of new tokens
per prompt, halting disabled, three paths generate the same tokens:
  unguarded  generate_plain: no classifier at all.
  shared     generate_with_scores: the value head reads the generator's own hidden
             states (one forward per token, the head is a dot product).
  separate   generate_plain + a StreamingScorer on a SECOND model instance fed
             every token (what a guard that does not share activations costs).
Paths are interleaved, rotating their order each repeat, so drifting machine load
hits all of them alike; the result is ratios of tokens/s measured in one run.
The head is randomly initialised: its weights do not change the cost.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

import torch

from classifiers.ml.device import pick_device
from classifiers.ml.output.model import load_backbone
from classifiers.ml.output.value_head import CausalLMWithValueHead
from classifiers.ml.serving.stream import (
    StreamingScorer,
    generate_plain,
    generate_with_scores,
)

logger = logging.getLogger(__name__)

PROMPTS = [
    "Tell me about vaccines.",
    "How do plants turn sunlight into food?",
    "Write a short poem about the sea.",
]


def _default_model_dir() -> str:
    try:
        from classifiers.ml.registry import generator_dir
    except ImportError as exc:  # pragma: no cover - registry is optional here
        raise SystemExit("pass --model-dir (classifiers.ml.registry missing)") from exc
    return str(generator_dir())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_ratio(a: list[float], b: list[float]) -> float:
    return float(statistics.median(x / y for x, y in zip(a, b, strict=True)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench streaming")
    parser.add_argument("--model-dir", default=None, help="generator folder")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cuda / cpu (default: auto)")
    args = parser.parse_args(argv or [])
    device = pick_device(args.device)
    model_dir = args.model_dir or _default_model_dir()

    lm, tokenizer = load_backbone(model_dir, device)
    guarded = CausalLMWithValueHead(lm).eval()
    # The separate classifier is a second copy of the backbone with its own head.
    second_lm, _ = load_backbone(model_dir, device)
    separate_model = CausalLMWithValueHead(second_lm).eval()
    scorer = StreamingScorer(separate_model, tokenizer)
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]

    def run_unguarded(messages: list[dict[str, str]]) -> list[int]:
        gen = generate_plain(lm, tokenizer, messages, max_new_tokens=args.new_tokens)
        return [t.token_id for t in gen]

    def run_shared(messages: list[dict[str, str]]) -> list[int]:
        gen = generate_with_scores(
            guarded, tokenizer, messages, max_new_tokens=args.new_tokens, halt=False
        )
        return [t.token_id for t in gen]

    def run_separate(messages: list[dict[str, str]]) -> list[int]:
        scorer.start(messages)
        ids = []
        for t in generate_plain(
            lm, tokenizer, messages, max_new_tokens=args.new_tokens
        ):
            scorer.push([t.token_id])  # score each token as it streams out
            ids.append(t.token_id)
        return ids

    paths = {"unguarded": run_unguarded, "shared": run_shared, "separate": run_separate}
    tokens = {name: 0 for name in paths}
    seconds = {name: 0.0 for name in paths}
    outputs: dict[str, list[list[int]]] = {name: [] for name in paths}
    # tokens/s of each path per (repeat, prompt): adjacent runs share machine load,
    # so the median of their paired ratios is robust to load that drifts.
    paired: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():  # warm-up: allocator, kernels, caches
        fn(conversations[0])
    names = list(paths)
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for messages in conversations:
            for name in order:
                _sync(device)
                t0 = time.perf_counter()
                ids = paths[name](messages)
                _sync(device)
                elapsed = time.perf_counter() - t0
                seconds[name] += elapsed
                tokens[name] += len(ids)
                paired[name].append(len(ids) / elapsed)
                if repeat == 0:
                    outputs[name].append(ids)
    tps = {name: tokens[name] / seconds[name] for name in paths}
    return {
        "device": str(device),
        "model_dir": model_dir,
        "dtype": str(next(lm.parameters()).dtype),
        "torch_threads": torch.get_num_threads(),
        "prompts": len(conversations),
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "tokens_per_s": tps,
        "guarded_over_unguarded": _median_ratio(paired["shared"], paired["unguarded"]),
        "separate_over_unguarded": _median_ratio(
            paired["separate"], paired["unguarded"]
        ),
        # The same ratios from total tokens / total seconds (more load-sensitive).
        "guarded_over_unguarded_total": tps["shared"] / tps["unguarded"],
        "separate_over_unguarded_total": tps["separate"] / tps["unguarded"],
        # Greedy and halting off: all three paths must emit identical tokens.
        "same_tokens": outputs["unguarded"] == outputs["shared"] == outputs["separate"],
    }
