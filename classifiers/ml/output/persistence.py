"""Saving and loading a trained output classifier (value head, LoRA or full backbone).

`save_output_classifier` writes a checkpoints.py artifact; `load_output_classifier`
rebuilds CausalLMWithValueHead + tokenizer from it. The artifact format is
unchanged from before the ml/ split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from classifiers.ml.checkpoints import load_artifact, save_artifact
from classifiers.ml.device import pick_device
from classifiers.ml.output.model import OutputClassifierConfig, load_backbone
from classifiers.ml.output.value_head import (
    CausalLMWithValueHead,
    apply_lora,
    lora_state_dict,
)

# ------------------------------------------------------------------------- save/load


@dataclass
class LoadedOutputClassifier:
    model: CausalLMWithValueHead
    tokenizer: Any
    config: OutputClassifierConfig
    thresholds: dict[str, Any]
    metrics: dict[str, Any]
    checksum: str


def save_output_classifier(
    model: CausalLMWithValueHead,
    directory: str | Path,
    *,
    thresholds: dict[str, Any],
    metrics: dict[str, Any],
    code_version: str,
    config: OutputClassifierConfig | None = None,
) -> str:
    """Atomic, checksummed artifact (checkpoints.save_artifact): `head` tensors
    always; `backbone` (full mode: all weights; lora: adapters only); the backbone
    is otherwise re-read from cfg.backbone_dir. Returns the artifact checksum."""

    cfg = config or getattr(model, "classifier_config", None)
    if cfg is None:
        raise ValueError("pass config= (the model was not made by training)")
    tensors = {"head": model.head_state_dict()}
    conf: dict[str, Any] = {
        "classifier": cfg.to_dict(),
        "hidden_size": model.hidden_size,
    }
    if cfg.mode == "full":
        tensors["backbone"] = model.lm.state_dict()
        conf["lm_config"] = json.loads(model.lm.config.to_json_string())
    elif cfg.mode == "lora":
        tensors["backbone"] = lora_state_dict(model.lm)
    return save_artifact(
        directory,
        tensors=tensors,
        config=conf,
        extra_json={"thresholds": thresholds, "metrics": metrics},
        code_version=code_version,
    )


def load_output_classifier(
    directory: str | Path,
    *,
    device: str | torch.device | None = None,
    backbone_dir: str | Path | None = None,
) -> LoadedOutputClassifier:
    """Verify checksums and rebuild the model; `backbone_dir` overrides the saved
    one (e.g. the generator moved); the tokenizer always comes from it."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


    art = load_artifact(directory)
    cfg = OutputClassifierConfig.from_dict(art.config["classifier"])
    src = str(backbone_dir or cfg.backbone_dir)
    dev = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True)
    if cfg.mode == "full":
        lm_conf = dict(art.config["lm_config"])
        lm_config = AutoConfig.for_model(lm_conf.pop("model_type"), **lm_conf)
        # fp32 as trained (older GPU-trained artifacts carry dtype bf16 in lm_config).
        lm = AutoModelForCausalLM.from_config(lm_config, dtype=torch.float32)
        lm.load_state_dict(art.tensors["backbone"])
        lm = lm.to(dev)
    else:
        lm, _ = load_backbone(src, dev)
    lm.requires_grad_(False)
    if cfg.mode == "lora":
        apply_lora(lm, cfg.lora_rank, cfg.lora_alpha)
        lm.load_state_dict(art.tensors["backbone"], strict=False)
    model = CausalLMWithValueHead(lm.to(dev), cfg.layers, cfg.dropout)
    model.load_head_state_dict(art.tensors["head"])
    model.classifier_config = cfg
    return LoadedOutputClassifier(
        model.eval(),
        tokenizer,
        cfg,
        art.extra.get("thresholds", {}),
        art.extra.get("metrics", {}),
        art.checksum,
    )
