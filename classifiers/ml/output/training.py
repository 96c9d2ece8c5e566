"""Training the output classifier (fast probe, full fine-tune, or LoRA).

Fast mode encodes hidden states once (`encode_features`) and trains the head on
them (`train_head_on_features`); full and LoRA modes train through the backbone.
Validation scores responses with output/scoring.py's rule.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from classifiers.ml.device import pick_device
from classifiers.ml.eval.evaluate import auroc
from classifiers.ml.output.encoding import (
    EncodedExample,
    collate,
    encode_example,
    tokenizer_pad_id,
)
from classifiers.ml.output.losses import PROB_EPS, classifier_loss, ntp_loss
from classifiers.ml.output.model import (
    OutputClassifierConfig,
    build_model,
    load_backbone,
)
from classifiers.ml.output.scoring import (
    aggregate_scores,
    final_scores,
    score_responses,
    token_probs,
)
from classifiers.ml.output.value_head import (
    CausalLMWithValueHead,
)
from classifiers.ml.types import Example, check_cancelled

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------------- training


@dataclass
class OutputTrainResult:
    model: CausalLMWithValueHead  # backbone + trained head (eval mode)
    tokenizer: Any  # the backbone's tokenizer (chat template included)
    config: OutputClassifierConfig
    history: list[dict[str, Any]]  # per epoch: epoch, step, loss, val_loss, val_auroc
    tokens_per_s: float  # training-set tokens x epochs / wall time (encode included)
    val_scores: list[list[float]] = field(default_factory=list)  # per-token probs


@torch.no_grad()
def encode_features(
    lm: nn.Module,
    encoded: list[EncodedExample],
    layers: tuple[int, ...],
    *,
    pad_id: int,
    batch_size: int = 16,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[torch.Tensor]:
    """Frozen-backbone features at each example's response tokens: (R_i, H*n) each.

    Fast mode runs the backbone once here instead of once per epoch; examples are
    batched in length order so little compute goes to padding.
    """
    device = next(lm.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    out: list[torch.Tensor | None] = [None] * len(encoded)
    for done in range(0, len(order), batch_size):
        check_cancelled(should_cancel)
        idx = order[done : done + batch_size]
        batch = collate([encoded[i] for i in idx], pad_id)
        res = lm(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            output_hidden_states=True,
            logits_to_keep=1,
        )
        feats = torch.cat([res.hidden_states[j] for j in layers], -1)  # (B, T, H*n)
        for row, i in enumerate(idx):
            e = encoded[i]
            out[i] = feats[row, e.response_start : len(e.input_ids)].float().cpu()
        if on_progress is not None:
            on_progress(
                stage="encode",
                done=min(done + batch_size, len(order)),
                total=len(order),
            )
    return [t for t in out if t is not None]


def pad_features(
    feats: list[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    R = max(max(len(f) for f in feats), 1)
    x = torch.zeros(len(feats), R, feats[0].shape[-1], device=device)  # (B, R, F)
    mask = torch.zeros(len(feats), R, dtype=torch.bool, device=device)  # (B, R)
    for i, f in enumerate(feats):
        x[i, : len(f)] = f.to(device)
        mask[i, : len(f)] = True
    return x, mask


def _val_metrics(
    cfg: OutputClassifierConfig,
    probs: list[list[float]],
    labels: list[int],
    loss: float,
) -> tuple[float, float]:
    if not probs:
        return loss, float("nan")
    scores = [aggregate_scores(p, cfg.aggregator, float(cfg.ema_alpha)) for p in probs]
    return loss, auroc(final_scores(scores), labels)


def train_head_on_features(
    cfg: OutputClassifierConfig,
    model: CausalLMWithValueHead,
    train_feats: list[torch.Tensor],
    train_labels: list[int],
    val_feats: list[torch.Tensor],
    val_labels: list[int],
    *,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[list[dict[str, Any]], list[list[float]]]:
    """Fast mode's loop: only the head trains, on cached features."""
    head, device = model.v_head, model.device
    torch.manual_seed(cfg.seed)
    head.summary.reset_parameters()  # same seed -> same start, whatever came before
    keep = [i for i, f in enumerate(train_feats) if len(f) > 0]
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(keep) / cfg.batch_size)
    total, step, history = steps_per_epoch * cfg.epochs, 0, []
    rng = random.Random(cfg.seed)
    val_probs: list[list[float]] = []
    for epoch in range(cfg.epochs):
        head.train()
        rng.shuffle(keep)
        losses = []
        for start in range(0, len(keep), cfg.batch_size):
            check_cancelled(should_cancel)
            idx = keep[start : start + cfg.batch_size]
            x, mask = pad_features([train_feats[i] for i in idx], device)
            y = torch.tensor([train_labels[i] for i in idx], device=device)
            loss = classifier_loss(cfg, head(x), y, mask, step / max(total - 1, 1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
            if on_progress is not None:
                on_progress(stage="train", done=step, total=total, loss=losses[-1])
        head.eval()
        val_loss, val_probs = float("nan"), []
        if val_feats:
            with torch.no_grad():
                x, mask = pad_features(val_feats, device)
                logits = head(x)  # (B, R)
                y = torch.tensor(val_labels, device=device)
                val_loss = classifier_loss(cfg, logits, y, mask, 1.0).item()
                probs = token_probs(logits).cpu()
            val_probs = [probs[i, : len(f)].tolist() for i, f in enumerate(val_feats)]
        val_loss, val_auroc = _val_metrics(cfg, val_probs, val_labels, val_loss)
        history.append(
            dict(
                epoch=epoch + 1,
                step=step,
                loss=float(np.mean(losses)),
                val_loss=val_loss,
                val_auroc=val_auroc,
            )
        )
        logger.info(
            "epoch %d loss %.4f val_loss %.4f val_auroc %.3f",
            epoch + 1,
            history[-1]["loss"],
            val_loss,
            val_auroc,
        )
    return history, val_probs


def _train_backbone(
    cfg: OutputClassifierConfig,
    model: CausalLMWithValueHead,
    tokenizer: Any,
    train_enc: list[EncodedExample],
    validation: list[Example],
    *,
    on_progress: Callable[..., None] | None,
    should_cancel: Callable[[], bool] | None,
) -> tuple[list[dict[str, Any]], list[list[float]]]:
    """Full / LoRA modes: every step runs the backbone with gradients."""
    device, pad_id = model.device, tokenizer_pad_id(tokenizer)
    torch.manual_seed(cfg.seed)
    head_params = list(model.v_head.parameters())
    body_params = [p for p in model.lm.parameters() if p.requires_grad]
    # A pretrained backbone wants a gentler step than a fresh head (LoRA's B starts
    # at zero, so it gets the head's rate).
    body_lr = cfg.lr * (0.1 if cfg.mode == "full" else 1.0)
    opt = torch.optim.AdamW(
        [{"params": head_params, "lr": cfg.lr}, {"params": body_params, "lr": body_lr}],
        weight_decay=cfg.weight_decay,
    )
    keep = [i for i, e in enumerate(train_enc) if e.response_start < len(e.input_ids)]
    total = math.ceil(len(keep) / cfg.batch_size) * cfg.epochs
    step, history, rng = 0, [], random.Random(cfg.seed)
    use_ntp = cfg.ntp_weight > 0
    val_probs: list[list[float]] = []
    for epoch in range(cfg.epochs):
        model.train()
        rng.shuffle(keep)
        losses = []
        for start in range(0, len(keep), cfg.batch_size):
            check_cancelled(should_cancel)
            batch = collate(
                [train_enc[i] for i in keep[start : start + cfg.batch_size]], pad_id
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            # Full mode on a GPU: bf16 matmuls over the fp32 master weights (LoRA's
            # frozen base is bf16 there already and its adapters stay fp32).
            autocast = cfg.mode == "full" and device.type == "cuda"
            with torch.autocast("cuda", torch.bfloat16, enabled=autocast):
                res = model(
                    batch["input_ids"],
                    batch["attention_mask"],
                    compute_lm_logits=use_ntp,
                )
            loss = classifier_loss(
                cfg,
                res.values,
                batch["labels"],
                batch["response_mask"],
                step / max(total - 1, 1),
            )
            if use_ntp:
                loss = loss + cfg.ntp_weight * ntp_loss(
                    res.logits_lm, batch["input_ids"], batch["response_mask"]
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
            if on_progress is not None:
                on_progress(stage="train", done=step, total=total, loss=losses[-1])
        model.eval()
        val_loss = float("nan")
        val_probs = score_responses(
            model,
            tokenizer,
            validation,
            batch_size=cfg.batch_size,
            max_length=cfg.max_length,
        )
        if validation:
            probs, mask = pad_features(
                [torch.tensor(p).unsqueeze(-1) for p in val_probs], torch.device("cpu")
            )
            logits = torch.logit(probs.squeeze(-1).clamp(PROB_EPS, 1 - PROB_EPS))  # (B, R)
            y = torch.tensor([e.label for e in validation])
            val_loss = classifier_loss(cfg, logits, y, mask, 1.0).item()
        val_labels = [e.label for e in validation]
        val_loss, val_auroc = _val_metrics(cfg, val_probs, val_labels, val_loss)
        history.append(
            dict(
                epoch=epoch + 1,
                step=step,
                loss=float(np.mean(losses)),
                val_loss=val_loss,
                val_auroc=val_auroc,
            )
        )
    return history, val_probs


def train_output_classifier(
    cfg: OutputClassifierConfig,
    train: list[Example],
    validation: list[Example],
    *,
    device: str | torch.device | None = None,
    lm: nn.Module | None = None,
    tokenizer: Any = None,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> OutputTrainResult:
    """Train the output classifier; `lm`/`tokenizer` override cfg.backbone_dir
    (tests pass tiny random models; callers may share an already loaded one)."""
    t0 = time.perf_counter()
    dev = pick_device(device)
    if lm is None or tokenizer is None:
        lm, tokenizer = load_backbone(cfg.backbone_dir, dev)
    lm = lm.to(dev)
    if cfg.mode == "full" and next(lm.parameters()).dtype != torch.float32:
        # bf16 weights (load_backbone on a GPU) cannot take AdamW's small steps: an
        # update under half a bf16 ulp (~4e-3 relative) rounds away. Fine-tune fp32
        # master weights (under bf16 autocast on a GPU); the artifact keeps fp32,
        # so calibration and serving score with the weights that were trained.
        lm = lm.float()
        # from_config (load_output_classifier) builds in the config's dtype.
        lm.config.dtype = torch.float32
    model = build_model(cfg, lm)
    model.classifier_config = cfg  # read by save_output_classifier
    train_enc = [encode_example(tokenizer, ex, cfg.max_length) for ex in train]
    n_tokens = sum(len(e.input_ids) for e in train_enc) * cfg.epochs
    if cfg.mode == "fast":
        model.eval()
        pad = tokenizer_pad_id(tokenizer)
        val_enc = [encode_example(tokenizer, ex, cfg.max_length) for ex in validation]
        feats = encode_features(
            lm,
            train_enc + val_enc,
            cfg.layers,
            pad_id=pad,
            batch_size=cfg.batch_size,
            on_progress=on_progress,
            should_cancel=should_cancel,
        )
        history, val_probs = train_head_on_features(
            cfg,
            model,
            feats[: len(train_enc)],
            [e.label for e in train_enc],
            feats[len(train_enc) :],
            [e.label for e in val_enc],
            on_progress=on_progress,
            should_cancel=should_cancel,
        )
    else:
        history, val_probs = _train_backbone(
            cfg,
            model,
            tokenizer,
            train_enc,
            validation,
            on_progress=on_progress,
            should_cancel=should_cancel,
        )
    model.eval()
    elapsed = time.perf_counter() - t0
    return OutputTrainResult(
        model, tokenizer, cfg, history, n_tokens / max(elapsed, 1e-9), val_probs
    )
