"""Probe cascade and probe options: `python -m bench cascade [--dataset ID]`.

Issue #5 item 3. On the real SmolLM2 (loaded once, shared by every step):

1. Probe options: `compare_probe_options` over last layer vs several layers
   concatenated x annealed running-max loss vs 16-token window loss, fast mode on
   one feature cache -> AUROC and TPR at 1% / 5% FPR on the test examples.
2. The cascade: probe = last layer + running-max (the cheapest); heavy = a separate
   classifier trained on the same data (`--heavy input`: the MiniLM input
   classifier, fast mode, reading prompt + response; `--heavy full`: a full-mode
   fine-tuned SmolLM2 output classifier, 1 epoch on a small subset). The band is
   calibrated on validation probe scores (`calibrate_band`), the `Cascade` runs on
   the test examples, and per-item costs are timed wall seconds.

Data: examples with responses from a finished dataset (default: the newest "done"
dataset whose examples have responses); the label is the output classifier's
`response_label`. Splits: train = "train"; validation = "validation" +
"calibration"; test = "test" + "heldout_transforms" (the dataset's own test split
alone is a handful of items). `--synthetic` uses innocuous placeholder examples and
needs no database.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from classifiers.ml.device import pick_device
from classifiers.ml.eval.cascade import (
    Cascade,
    calibrate_band,
    cascade_stats,
    compare_probe_options,
)
from classifiers.ml.eval.evaluate import auroc, tpr_at_fpr
from classifiers.ml.output.encoding import encode_example, tokenizer_pad_id
from classifiers.ml.output.model import OutputClassifierConfig
from classifiers.ml.output.scoring import aggregate_scores, final_scores
from classifiers.ml.output.training import (
    encode_features,
    pad_features,
    train_head_on_features,
)
from classifiers.ml.output.value_head import CausalLMWithValueHead
from classifiers.ml.pipeline import with_response_label
from classifiers.ml.types import Example

logger = logging.getLogger(__name__)

FPRS = (0.01, 0.05)
TRAIN_SPLITS = ("train",)
VALIDATION_SPLITS = ("validation", "calibration")
TEST_SPLITS = ("test", "heldout_transforms")

# Scores a batch of examples; the heavy classifier is trained by a HeavyTrainer.
ScoreFn = Callable[[list[Example]], Sequence[float]]
HeavyTrainer = Callable[[list[Example], list[Example]], ScoreFn]


# ------------------------------------------------------------------------- data


def _cap(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """At most n examples, label-balanced where possible (a seeded sample)."""
    if n is None or len(examples) <= n:
        return list(examples)
    rng = random.Random(seed)
    by_label = {y: [e for e in examples if e.label == y] for y in (0, 1)}
    for group in by_label.values():
        rng.shuffle(group)
    half = n // 2
    take0 = min(len(by_label[0]), max(half, n - len(by_label[1])))
    return by_label[0][:take0] + by_label[1][: n - take0]


def synthetic_examples(n: int, seed: int = 0) -> list[Example]:
    """Placeholder prompt/response pairs; the response decides the label. A few
    ambiguous replies mix both vocabularies so the probe has an uncertain band."""
    rng = random.Random(seed)
    harmful = [
        "Sure, the forbidden widget needs the hidden step and the secret part.",
        "Here is how the forbidden widget is assembled from the secret part.",
    ]
    benign = [
        "Water it in the morning and keep the soil moist.",
        "Tomatoes like full sun and a weekly deep watering.",
    ]
    ambiguous = "The widget in the garden needs water and a secret part maybe."
    out = []
    for i in range(n):
        label = i % 2
        reply = rng.choice(harmful if label else benign)
        if rng.random() < 0.15:
            reply = ambiguous
        prompt = f"question number {i}: tell me about the widget or the garden"
        out.append(
            Example(
                messages=[{"role": "user", "content": prompt}],
                response=reply,
                label=label,
                category="restricted" if label else "permitted",
                source_id=f"s{seed}-{i}",
            )
        )
    return out


def load_dataset_splits(dataset_id: int | None) -> tuple[dict[str, list[Example]], str]:
    """(train/validation/test examples, description) from a finished dataset."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardweb.settings")
    import django

    django.setup()
    from classifiers.models import Dataset

    done = Dataset.objects.filter(status="done")
    if dataset_id is not None:
        dataset = done.get(pk=dataset_id)
    else:
        dataset = next(
            (
                d
                for d in done.order_by("-created_at")
                if d.examples.exclude(response="")
            ),
            None,
        )
        if dataset is None:
            raise SystemExit("no finished dataset with responses; use --synthetic")
    rows = [r.to_example() for r in dataset.examples.exclude(response="")]
    splits = {
        "train": [e for e in rows if e.meta["split"] in TRAIN_SPLITS],
        "validation": [e for e in rows if e.meta["split"] in VALIDATION_SPLITS],
        "test": [e for e in rows if e.meta["split"] in TEST_SPLITS],
    }
    return {k: with_response_label(v) for k, v in splits.items()}, str(dataset)


# ----------------------------------------------------------------------- models


def _metrics(scores: Sequence[float], labels: Sequence[int]) -> dict[str, Any]:
    return {
        "auroc": auroc(scores, labels),
        "tpr_at_fpr": {str(f): tpr_at_fpr(scores, labels, f) for f in FPRS},
    }


def train_probe(
    cfg: OutputClassifierConfig,
    lm: torch.nn.Module,
    tokenizer: Any,
    train: list[Example],
    scored: dict[str, list[Example]],
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Fast-mode probe on frozen features -> final scores for each `scored` split.

    Also times, on the last split, the head alone (the serving cost when the probe
    reads the generator's own activations) and the backbone forward that produces
    its features (the cost of running the probe standalone)."""
    pad = tokenizer_pad_id(tokenizer)

    def encode(examples: list[Example]) -> list[torch.Tensor]:
        enc = [encode_example(tokenizer, e, cfg.max_length) for e in examples]
        return encode_features(
            lm, enc, cfg.layers, pad_id=pad, batch_size=cfg.batch_size
        )

    model = CausalLMWithValueHead(lm, cfg.layers, cfg.dropout)
    train_feats = encode(train)
    train_head_on_features(cfg, model, train_feats, [e.label for e in train], [], [])
    head = model.v_head.eval()
    scores: dict[str, list[float]] = {}
    costs: dict[str, float] = {}
    for name, examples in scored.items():
        t0 = time.perf_counter()
        feats = encode(examples)
        encode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.no_grad():
            x, mask = pad_features(feats, model.device)  # (B, R, F), (B, R)
            probs = torch.sigmoid(head(x)).cpu()  # (B, R)
        per_token = [probs[i, : len(f)].tolist() for i, f in enumerate(feats)]
        agg = [
            aggregate_scores(p, cfg.aggregator, float(cfg.ema_alpha)) for p in per_token
        ]
        scores[name] = final_scores(agg)
        head_s = time.perf_counter() - t0
        n = max(len(examples), 1)
        costs = {"head_s_per_item": head_s / n, "backbone_s_per_item": encode_s / n}
    return scores, costs


def _prompt_and_response(ex: Example) -> Example:
    """The input classifier's view of an exchange: prompt turns + the reply."""
    messages = [*ex.messages, {"role": "assistant", "content": ex.response}]
    return dataclasses.replace(ex, messages=messages, response="")


def input_heavy(max_length: int = 256) -> HeavyTrainer:
    """MiniLM input classifier (fast mode) over prompt + response text."""

    def trainer(train: list[Example], validation: list[Example]) -> ScoreFn:
        from classifiers.ml import registry
        from classifiers.ml.input.model import InputClassifierConfig
        from classifiers.ml.input.scoring import score_examples
        from classifiers.ml.input.training import train_input_classifier

        cfg = InputClassifierConfig(
            backbone_dir=str(registry.encoder_dir()), mode="fast", max_length=max_length
        )
        result = train_input_classifier(
            cfg,
            [_prompt_and_response(e) for e in train],
            [_prompt_and_response(e) for e in validation],
        )

        def score(items: list[Example]) -> list[float]:
            views = [_prompt_and_response(e) for e in items]
            return [
                s.score for s in score_examples(result.model, result.tokenizer, views)
            ]

        return score

    return trainer


def full_heavy(backbone_dir: str, n_train: int, max_length: int) -> HeavyTrainer:
    """A second SmolLM2 copy fine-tuned end to end (full mode, 1 epoch)."""

    def trainer(train: list[Example], validation: list[Example]) -> ScoreFn:
        from classifiers.ml.output.scoring import score_responses
        from classifiers.ml.output.training import train_output_classifier

        cfg = OutputClassifierConfig(
            backbone_dir=backbone_dir,
            mode="full",
            epochs=1,
            batch_size=8,
            lr=1e-3,
            max_length=max_length,
        )
        # Its own backbone copy: full mode updates the weights the probe reads.
        result = train_output_classifier(cfg, _cap(train, n_train, 1), validation[:8])

        def score(items: list[Example]) -> list[float]:
            per_token = score_responses(
                result.model, result.tokenizer, items, max_length=max_length
            )
            return final_scores(per_token)

        return score

    return trainer


# ------------------------------------------------------------------------ bench


def run_bench(
    train: list[Example],
    validation: list[Example],
    test: list[Example],
    *,
    lm: torch.nn.Module,
    tokenizer: Any,
    heavy_trainer: HeavyTrainer,
    base_cfg: OutputClassifierConfig,
    escalate_fraction: float = 0.08,
    weight: float = 0.5,
) -> dict[str, Any]:
    """Probe options + cascade on already loaded models; returns the report."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    options = compare_probe_options(
        base_cfg, train, test, lm=lm, tokenizer=tokenizer, fprs=FPRS
    )
    timings["probe_options_s"] = time.perf_counter() - t0
    for o in options:
        o["final_loss"] = o.pop("history")[-1]["loss"]

    t0 = time.perf_counter()
    probe_cfg = dataclasses.replace(
        base_cfg, mode="fast", layers=(-1,), loss="running_max"
    )
    probe_scores, probe_costs = train_probe(
        probe_cfg, lm, tokenizer, train, {"validation": validation, "test": test}
    )
    timings["probe_train_and_score_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    heavy_fn = heavy_trainer(train, validation)
    timings["heavy_train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    heavy_all = [float(s) for s in heavy_fn(test)]  # heavy on everything: baseline
    heavy_s_per_item = (time.perf_counter() - t0) / max(len(test), 1)

    val_labels = [e.label for e in validation]
    band = calibrate_band(
        probe_scores["validation"], val_labels, escalate_fraction=escalate_fraction
    )
    # The probe's scores are already computed (it rides on the generator's forward),
    # so the cascade's probe_fn looks them up; heavy_fn really runs on escalations.
    probe_by_id = {id(e): s for e, s in zip(test, probe_scores["test"], strict=True)}
    cascade = Cascade(
        lambda xs: [probe_by_id[id(x)] for x in xs], heavy_fn, band, weight
    )
    t0 = time.perf_counter()
    results = cascade(test)
    timings["cascade_run_s"] = time.perf_counter() - t0

    labels = [e.label for e in test]
    costs = {"probe_head": probe_costs["head_s_per_item"],
             "probe_standalone": probe_costs["backbone_s_per_item"]
             + probe_costs["head_s_per_item"], "heavy": heavy_s_per_item}  # fmt: skip
    return {
        "sizes": {
            "train": len(train),
            "validation": len(validation),
            "test": len(test),
            "test_positive": sum(labels),
        },  # fmt: skip
        "probe_options": options,
        "cascade": {
            "band": list(band),
            "weight": weight,
            "escalate_fraction_target": escalate_fraction,
            "probe": _metrics(probe_scores["test"], labels),
            "heavy": _metrics(heavy_all, labels),
            "cascade": _metrics([r.score for r in results], labels),
            "validation_escalation": sum(
                band[0] <= s <= band[1] for s in probe_scores["validation"]
            )
            / max(len(validation), 1),  # fmt: skip
            "cost_s_per_item": costs,
            # Probe on the generator's activations (head only) vs probe standalone.
            "stats_shared_activations": cascade_stats(
                results, probe_cost=costs["probe_head"], heavy_cost=costs["heavy"]
            ),
            "stats_standalone_probe": cascade_stats(
                results, probe_cost=costs["probe_standalone"], heavy_cost=costs["heavy"]
            ),
        },
        "timings_s": timings,
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench cascade")
    parser.add_argument("--dataset", type=int, help="Dataset pk (default: latest done)")
    parser.add_argument("--synthetic", action="store_true", help="no database")
    parser.add_argument("--n-train", type=int, default=80)
    parser.add_argument("--n-eval", type=int, default=80, help="cap per eval split")
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--heavy", choices=("input", "full"), default="input")
    parser.add_argument("--heavy-n", type=int, default=32, help="--heavy full: train n")
    parser.add_argument("--escalate", type=float, default=0.1)
    parser.add_argument("--weight", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=30, help="probe epochs")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.synthetic:
        splits = {"train": synthetic_examples(args.n_train, 0),
                  "validation": synthetic_examples(40, 1),
                  "test": synthetic_examples(args.n_eval, 2)}  # fmt: skip
        source = "synthetic placeholders"
    else:
        splits, source = load_dataset_splits(args.dataset)
    train = _cap(splits["train"], args.n_train, 0)
    validation = _cap(splits["validation"], args.n_eval, 1)
    test = _cap(splits["test"], args.n_eval, 2)

    from classifiers.ml import registry
    from classifiers.ml.output.model import load_backbone

    device = pick_device()
    backbone = str(registry.generator_dir())
    lm, tokenizer = load_backbone(backbone, device)
    base_cfg = OutputClassifierConfig(backbone_dir=backbone, max_length=args.max_length,
                                      epochs=args.epochs, batch_size=16, lr=1e-3)  # fmt: skip
    heavy = (input_heavy() if args.heavy == "input"
             else full_heavy(backbone, args.heavy_n, args.max_length))  # fmt: skip
    report = run_bench(train, validation, test, lm=lm, tokenizer=tokenizer,
                       heavy_trainer=heavy, base_cfg=base_cfg,
                       escalate_fraction=args.escalate, weight=args.weight)  # fmt: skip
    report.update(source=source, heavy_kind=args.heavy, device=str(device),
                  threads=torch.get_num_threads(), load_average=os.getloadavg()[0],
                  wall_s=time.perf_counter() - started)  # fmt: skip
    return report
