"""Saving and loading a trained input classifier.

`save_input_classifier` writes the head, config and thresholds as a checkpoints.py
artifact (kind ARTIFACT_KIND, with the backbone's fingerprint);
`load_input_classifier` rebuilds InputClassifier + tokenizer from it. The artifact
format is unchanged from before the ml/ split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from classifiers.ml.checkpoints import ArtifactError, load_artifact, save_artifact
from classifiers.ml.device import pick_device
from classifiers.ml.eval.calibrate import Thresholds
from classifiers.ml.input.model import (
    ARTIFACT_KIND,
    InputClassifier,
    InputClassifierConfig,
)

# ------------------------------------------------------------------------ persistence


def _backbone_fingerprint(backbone_dir: str | Path) -> str:
    """sha256 over the encoder's weight files: a fast-mode head is only valid on
    exactly the encoder it was trained on."""
    digest = hashlib.sha256()
    root = Path(backbone_dir)
    weight_files = sorted(
        path
        for path in root.iterdir()
        if path.suffix in (".safetensors", ".bin") and path.is_file()
    )
    for path in weight_files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LoadedInputClassifier:
    model: InputClassifier  # in eval mode, on the requested device
    tokenizer: Any  # the encoder's tokenizer
    thresholds: Thresholds | None  # calibrated thresholds saved with the model
    metrics: dict[str, Any]  # metrics saved with the model
    config: dict[str, Any]  # the artifact's config document
    checksum: str  # the artifact's overall checksum


def save_input_classifier(
    model: InputClassifier,
    tokenizer_dir: str | Path,
    directory: str | Path,
    *,
    thresholds: Thresholds | dict[str, Any] | None,
    metrics: dict[str, Any],
    code_version: str,
) -> str:
    """Save as an artifact; fast mode stores only the head (the encoder is
    referenced by path and fingerprint), full mode stores encoder + head."""
    cfg = model.cfg
    tensors: dict[str, dict[str, torch.Tensor]] = {"head": model.head.state_dict()}
    config: dict[str, Any] = {
        "kind": ARTIFACT_KIND,
        "classifier": asdict(cfg),
        "tokenizer_dir": str(tokenizer_dir),
        "embedding_dim": int(model.backbone.config.hidden_size),
    }
    if model.frozen_backbone:
        config["backbone_sha256"] = _backbone_fingerprint(cfg.backbone_dir)
    else:
        tensors["backbone"] = model.backbone.state_dict()
        config["backbone_config"] = json.loads(model.backbone.config.to_json_string())
    if isinstance(thresholds, Thresholds):
        thresholds = thresholds.to_dict()
    return save_artifact(
        directory,
        tensors=tensors,
        config=config,
        extra_json={"thresholds": thresholds or {}, "metrics": metrics},
        code_version=code_version,
    )


def load_input_classifier(
    directory: str | Path,
    *,
    device: str | torch.device | None = None,
    backbone_dir: str | Path | None = None,
) -> LoadedInputClassifier:
    """Load a saved input classifier; `backbone_dir` overrides the saved encoder
    path (e.g. when the venv moved); its fingerprint must still match."""
    artifact = load_artifact(directory)
    config = artifact.config
    if config.get("kind") != ARTIFACT_KIND:
        raise ArtifactError(f"{directory} is not an input classifier artifact")
    # Ignore fields this code does not know (an artifact from a newer version).
    known = {f.name for f in fields(InputClassifierConfig)}
    cfg = InputClassifierConfig(
        **{k: v for k, v in config["classifier"].items() if k in known}
    )
    tokenizer_dir = Path(config["tokenizer_dir"])
    if backbone_dir is not None:
        if tokenizer_dir == Path(cfg.backbone_dir) or not tokenizer_dir.exists():
            tokenizer_dir = Path(backbone_dir)
        cfg = replace(cfg, backbone_dir=str(backbone_dir))

    if cfg.mode == "fast":
        expected = config.get("backbone_sha256")
        if not Path(cfg.backbone_dir).is_dir():
            raise ArtifactError(f"encoder folder {cfg.backbone_dir} does not exist")
        if expected and _backbone_fingerprint(cfg.backbone_dir) != expected:
            raise ArtifactError(
                f"encoder at {cfg.backbone_dir} differs from the one the head was "
                "trained on (weight fingerprint mismatch)"
            )
        backbone = AutoModel.from_pretrained(cfg.backbone_dir, dtype=torch.float32)
    else:
        backbone_config = dict(config["backbone_config"])
        model_type = backbone_config.pop("model_type")
        backbone_cfg = AutoConfig.for_model(model_type, **backbone_config)
        backbone = AutoModel.from_config(backbone_cfg)
        backbone.load_state_dict(artifact.tensors["backbone"])

    model = InputClassifier(cfg, backbone=backbone)
    model.head.load_state_dict(artifact.tensors["head"])
    model.to(pick_device(device)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    thresholds_doc = artifact.extra.get("thresholds") or {}
    thresholds = Thresholds.from_dict(thresholds_doc) if thresholds_doc else None
    return LoadedInputClassifier(
        model=model,
        tokenizer=tokenizer,
        thresholds=thresholds,
        metrics=artifact.extra.get("metrics", {}),
        config=config,
        checksum=artifact.checksum,
    )
