"""What a served probe cascade costs: `python -m bench cascade_serving --json OUT`.

On the real generator (SmolLM2-135M-Instruct), greedy, halting off, the guard engine
generates the same tokens four ways:
  probe      the output model alone (value head on the generator's activations);
  never      the cascade wired in, but no probe score reaches its band (the
             bookkeeping overhead of a cascade that does not escalate);
  midway     the heavy classifier joins half-way through each reply (one prefill of
             prompt + half the reply, then one forward per token);
  always     the heavy classifier joins at the first token (the worst case).
The heavy classifier is a second SmolLM2 instance with its own value head and KV
cache, as a full-mode output model is served. Paths are interleaved, rotating their
order each repeat; results are tokens/s ratios to `probe` inside one run. A served
cascade's expected cost is about escalation_rate x (1 - always/probe) of probe-only
throughput. Heads are random: weights do not change the cost.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from bench.streaming import PROMPTS, _default_model_dir, _median_ratio
from classifiers.ml.device import pick_device
from classifiers.ml.eval.calibrate import Thresholds
from classifiers.ml.output.model import load_backbone
from classifiers.ml.output.value_head import CausalLMWithValueHead
from classifiers.ml.serving.cascade import CascadeSettings
from classifiers.ml.serving.engine import (
    CascadeGuard,
    GuardConfig,
    GuardEngine,
    run_to_end,
)

NEVER = (1.5, 1.5)  # no probability reaches it
ALWAYS = (0.0, 1.0)


def _engine(probe: Any, tokenizer: Any, cascade: CascadeGuard | None) -> GuardEngine:
    return GuardEngine(
        input_guard=None, output_model=probe,
        output_thresholds=Thresholds(global_threshold=2.0, target_fpr=0.01),
        lm=probe.lm, tokenizer=tokenizer, cascade=cascade,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench cascade_serving")
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model_dir = args.model_dir or _default_model_dir()
    lm, tokenizer = load_backbone(model_dir, device)
    heavy_lm, _ = load_backbone(model_dir, device)
    torch.manual_seed(0)
    probe = CausalLMWithValueHead(lm, (-1,)).to(device).eval()
    heavy = CausalLMWithValueHead(heavy_lm, (-1,)).to(device).eval()
    config = GuardConfig(mode="shadow", max_new_tokens=args.new_tokens)
    messages = [[{"role": "user", "content": p}] for p in PROMPTS]

    def midway_settings(prompt_messages: list[dict[str, str]]) -> CascadeSettings:
        # A band whose lower edge the probe's running max first reaches at or after
        # the middle of the reply: its first rise from there on (else never).
        result = run_to_end(_engine(probe, tokenizer, None).stream(prompt_messages, config))
        scores = [t.score for t in result.tokens]
        middle = len(scores) // 2
        rise = next((scores[i] for i in range(max(middle, 1), len(scores))
                     if scores[i] > scores[i - 1]), None)  # fmt: skip
        return CascadeSettings((rise, 1.0) if rise is not None else NEVER, 0.5, 2.0)

    midway = [midway_settings(m) for m in messages]
    paths = {
        "probe": lambda i: _engine(probe, tokenizer, None),
        "never": lambda i: _engine(probe, tokenizer, CascadeGuard(CascadeSettings(NEVER, 0.5, 2.0), heavy, tokenizer)),
        "midway": lambda i: _engine(probe, tokenizer, CascadeGuard(midway[i], heavy, tokenizer)),
        "always": lambda i: _engine(probe, tokenizer, CascadeGuard(CascadeSettings(ALWAYS, 0.5, 2.0), heavy, tokenizer)),
    }  # fmt: skip
    rates: dict[str, list[float]] = {name: [] for name in paths}
    tokens_by_path: dict[str, list[list[int]]] = {name: [] for name in paths}
    escalated: dict[str, list[int | None]] = {name: [] for name in paths}
    names = list(paths)
    for repeat in range(args.repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        for name in order:
            n_tokens, seconds = 0, 0.0
            for i, m in enumerate(messages):
                engine = paths[name](i)
                t0 = time.perf_counter()
                result = run_to_end(engine.stream(m, config))
                seconds += time.perf_counter() - t0
                n_tokens += len(result.tokens)
                if repeat == 0:
                    tokens_by_path[name].append([t.token_id for t in result.tokens])
                    escalated[name].append(result.escalated_at)
            rates[name].append(n_tokens / seconds)
    same = all(tokens_by_path[n] == tokens_by_path["probe"] for n in names)
    return {
        "device": str(device),
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "threads": args.threads,
        "tokens_per_s": {n: statistics.median(r) for n, r in rates.items()},
        "ratio_to_probe": {n: _median_ratio(r, rates["probe"]) for n, r in rates.items()},
        "escalated_at": escalated,
        "same_tokens": same,
    }
