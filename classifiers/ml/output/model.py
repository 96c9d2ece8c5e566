"""The output classifier's configuration and model construction.

A value head on the generator (SmolLM2) predicts, at every response token, the
probability that the FULL response is harmful. Modes (OutputClassifierConfig.mode):
  fast  frozen backbone, head only (a probe); hidden states are encoded once.
  full  the backbone is fine-tuned too (optionally with a next-token regulariser).
  lora  low-rank adapters on q_proj/v_proj plus the head (a local minimal LoRA, so
        artifacts have one format whether or not `peft` is installed).
`load_backbone` loads the causal LM from a local folder; `build_model` wraps it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classifiers.ml.output.value_head import (
    CausalLMWithValueHead,
    apply_lora,
)


@dataclass
class OutputClassifierConfig:
    backbone_dir: str = ""  # HF folder of the causal LM (the generator itself)
    mode: str = "fast"  # "fast" (probe) | "full" (fine-tune) | "lora"
    layers: tuple[int, ...] = (-1,)  # hidden_states indices read by the head
    loss: str = "running_max"  # "running_max" | "window"
    window: int = 16  # tokens in the window loss (and the EMA span at serving)
    ntp_weight: float = 0.0  # next-token CE regulariser; only when backbone trains
    lr: float = 1e-3  # AdamW learning rate (head; the backbone uses lr * 0.1)
    weight_decay: float = 0.0  # AdamW weight decay
    epochs: int = 3  # passes over the training set
    batch_size: int = 16  # examples per optimiser step
    max_length: int = 512  # tokens per example (prompt + response) after truncation
    seed: int = 0  # seeds head init, shuffling and dropout
    dropout: float = 0.0  # dropout before the head
    lora_rank: int = 8  # LoRA rank (mode "lora")
    lora_alpha: float = 16.0  # LoRA scale numerator (scale = alpha / rank)
    ema_alpha: float | None = None  # serving EMA weight; None -> 2 / (window + 1)

    def __post_init__(self) -> None:
        if self.mode not in ("fast", "full", "lora"):
            raise ValueError(f"unknown mode {self.mode!r}")
        if self.loss not in ("running_max", "window"):
            raise ValueError(f"unknown loss {self.loss!r}")
        self.layers = tuple(int(i) for i in self.layers)
        if self.ema_alpha is None:
            # The EMA whose centre of mass matches a `window`-token moving average.
            self.ema_alpha = 2.0 / (self.window + 1)

    @property
    def aggregator(self) -> str:
        """How per-token probabilities are combined when serving."""
        return "cummax" if self.loss == "running_max" else "ema"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OutputClassifierConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def load_backbone(backbone_dir: str | Path, device: torch.device) -> tuple[Any, Any]:
    """The causal LM and its tokenizer from a local folder (never the hub)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # bf16 halves memory and time on GPU; CPUs are faster (and exact) in fp32.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lm = AutoModelForCausalLM.from_pretrained(
        str(backbone_dir), dtype=dtype, local_files_only=True
    ).to(device)
    tokenizer = AutoTokenizer.from_pretrained(str(backbone_dir), local_files_only=True)
    return lm.eval(), tokenizer


def build_model(cfg: OutputClassifierConfig, lm: nn.Module) -> CausalLMWithValueHead:
    """Wrap `lm` with a freshly seeded head and set what trains for cfg.mode."""
    torch.manual_seed(cfg.seed)
    if cfg.mode == "lora":
        apply_lora(lm, cfg.lora_rank, cfg.lora_alpha)
    else:
        lm.requires_grad_(cfg.mode == "full")
    return CausalLMWithValueHead(lm, cfg.layers, cfg.dropout)
