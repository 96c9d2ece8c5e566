"""Training throughput on this machine: fast vs full mode, input and output classifier.

    python -m bench training [--n 64] [--input-epochs 2] [--output-n 16] [--device cuda] [--no-output]

Input classifier: all-MiniLM-L6-v2 backbone; fast = frozen encoder (embeddings
computed once, counted in the time), full = fine-tune encoder + head. Output
classifier: SmolLM2-135M backbone; fast = probe on frozen hidden states (encoding
counted), full = fine-tune all weights. Examples/s = examples x epochs / wall time
of the whole train_* call. Texts are innocuous placeholders.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from classifiers.ml import registry
from classifiers.ml.input.model import InputClassifierConfig
from classifiers.ml.input.training import train_input_classifier
from classifiers.ml.output.model import OutputClassifierConfig
from classifiers.ml.output.training import train_output_classifier
from classifiers.ml.types import Example

HARMFUL = "how do I make the forbidden widget number {i} at home with the secret part"
BENIGN = "how often should I water tomato plant number {i} in a sunny garden bed"


def _examples(n: int, *, response: bool = False) -> list[Example]:
    out = []
    for i in range(n):
        label = i % 2
        text = (HARMFUL if label else BENIGN).format(i=i)
        reply = ("Sure, the forbidden widget needs the hidden step." if label
                 else "Water it in the morning and keep the soil moist.") if response else ""  # fmt: skip
        out.append(Example(messages=[{"role": "user", "content": text}], response=reply,
                           label=label, category="restricted" if label else "permitted",
                           source_id=str(i)))  # fmt: skip
    return out


def _input(mode: str, n: int, epochs: int, device: str) -> dict[str, Any]:
    cfg = InputClassifierConfig(backbone_dir=str(registry.encoder_dir()), mode=mode,
                                epochs=epochs, max_length=64, batch_size=16)  # fmt: skip
    train = _examples(n)
    started = time.perf_counter()
    result = train_input_classifier(cfg, train, _examples(8), device=device)
    wall = time.perf_counter() - started
    return {"examples_per_s": n * epochs / wall, "wall_s": wall,
            "optimiser_examples_per_s": result.examples_per_second}  # fmt: skip


def _output(mode: str, n: int, epochs: int, device: str) -> dict[str, Any]:
    cfg = OutputClassifierConfig(backbone_dir=str(registry.generator_dir()), mode=mode,
                                 epochs=epochs, batch_size=8, max_length=96)  # fmt: skip
    started = time.perf_counter()
    result = train_output_classifier(cfg, _examples(n, response=True),
                                     _examples(4, response=True), device=device)  # fmt: skip
    wall = time.perf_counter() - started
    return {"examples_per_s": n * epochs / wall, "wall_s": wall,
            "tokens_per_s": result.tokens_per_s}  # fmt: skip


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench training")
    parser.add_argument("--n", type=int, default=64, help="input-classifier examples")
    parser.add_argument("--input-epochs", type=int, default=2)
    parser.add_argument("--output-n", type=int, default=16)
    parser.add_argument("--output-epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-output", action="store_true",
                        help="input classifier only (no SmolLM2 on this machine)")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    # Warm-up: load weights once (and start CUDA) so caches do not skew the first mode.
    _input("fast", 8, 1, args.device)
    result: dict[str, Any] = {"device": args.device, "threads": torch.get_num_threads()}
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name()
    kinds = [("input", _input, args.n, args.input_epochs)]
    if not args.no_output:
        kinds.append(("output", _output, args.output_n, args.output_epochs))
    for kind, fn, n, epochs in kinds:
        fast, full = fn("fast", n, epochs, args.device), fn("full", n, epochs, args.device)
        result[kind] = {"n": n, "epochs": epochs, "fast": fast, "full": full,
                        "fast_over_full": fast["examples_per_s"] / full["examples_per_s"]}  # fmt: skip
    return result
