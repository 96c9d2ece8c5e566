"""The streaming output classifier: training, per-token scoring, save/load.

A value head on the generator (SmolLM2) predicts, at every response token, the
probability that the FULL response is harmful. Modes:
  fast  frozen backbone, head only (a probe); hidden states are encoded once.
  full  the backbone is fine-tuned too (optionally with a next-token regulariser).
  lora  low-rank adapters on q_proj/v_proj plus the head (a local minimal LoRA, so
        artifacts have one format whether or not `peft` is installed).
Losses follow Constitutional Classifiers: `running_max_loss` anneals from per-prefix
BCE to BCE on the cumulative maximum (the quantity the guard halts on), and
`window_loss` is the softmax-weighted sliding-window variant served as an EMA.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from classifiers.ml.device import pick_device
from classifiers.ml.evaluate import auroc
from classifiers.ml.types import Example, Message, check_cancelled
from classifiers.ml.value_head import (
    CausalLMWithValueHead,
    apply_lora,
    lora_state_dict,
)

logger = logging.getLogger(__name__)

_EPS = 1e-6  # probability clamp before log(); keeps BCE finite in fp32


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


# ----------------------------------------------------------------------------- losses


def _bce_on_probs(
    probs: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean over sequences of the mean BCE over masked tokens (each response counts
    once, so long responses do not dominate the batch)."""
    probs = probs.clamp(_EPS, 1 - _EPS)  # (B, T)
    y = labels.to(probs.dtype).unsqueeze(1)  # (B, 1)
    bce = -(y * probs.log() + (1 - y) * (1 - probs).log())  # (B, T)
    m = mask.to(probs.dtype)
    per_seq = (bce * m).sum(1) / m.sum(1).clamp_min(1)  # (B,)
    has_tokens = m.sum(1) > 0
    return per_seq[has_tokens].mean() if has_tokens.any() else bce.sum() * 0


def running_max_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    response_mask: torch.Tensor,
    progress: float,
) -> torch.Tensor:
    """BCE of each response prefix's prediction against the full-sequence label.

    The prediction is p'_t = (1 - progress) * p_t + progress * cummax(p)_t. Early in
    training (progress 0) every prefix gets its own gradient; by the end it trains
    exactly the cumulative max the guard halts on, so a benign response is not
    punished for one early spike less than a harmful one is rewarded for it.
    """
    probs = torch.sigmoid(logits.float())  # (B, T)
    mask = response_mask.bool()
    # Zero outside the response so the running max starts fresh at its first token.
    masked = probs * mask  # (B, T)
    running = torch.cummax(masked, dim=1).values  # (B, T)
    mixed = (1 - progress) * probs + progress * running  # (B, T)
    return _bce_on_probs(mixed, labels, mask)


def window_probs(
    logits: torch.Tensor, response_mask: torch.Tensor, window: int
) -> torch.Tensor:
    """Softmax(logit)-weighted mean of the last `window` response-token probs."""
    logits = logits.float()
    mask = response_mask.bool()
    B, T = logits.shape
    neg_inf = torch.finfo(logits.dtype).min
    lg = logits.masked_fill(~mask, neg_inf)  # (B, T)
    pr = torch.sigmoid(logits) * mask  # (B, T)
    lg = F.pad(lg, (window - 1, 0), value=neg_inf).unfold(1, window, 1)  # (B, T, W)
    pr = F.pad(pr, (window - 1, 0), value=0.0).unfold(1, window, 1)  # (B, T, W)
    weights = torch.softmax(lg, dim=-1)  # (B, T, W); uniform junk where no token
    out = (weights * pr).sum(-1)  # (B, T)
    return out * mask


def window_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    response_mask: torch.Tensor,
    window: int = 16,
) -> torch.Tensor:
    """BCE of the softmax-weighted sliding-window prediction (served as an EMA)."""
    return _bce_on_probs(
        window_probs(logits, response_mask, window), labels, response_mask.bool()
    )


def ntp_loss(
    lm_logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Next-token cross-entropy on response tokens (keeps the generator generating)."""
    pred = lm_logits[:, :-1]  # (B, T-1, V) position t predicts token t+1
    target = input_ids[:, 1:]  # (B, T-1)
    m = response_mask[:, 1:].bool()  # (B, T-1)
    if not m.any():
        return pred.sum() * 0
    # Upcast only the response positions (bf16 logits under autocast; V is ~49k).
    return F.cross_entropy(pred[m].float(), target[m])


# ------------------------------------------------------------------------ tokenising


def prompt_token_ids(tokenizer: Any, messages: list[Message]) -> list[int]:
    """The prompt rendered by the chat template, ending in the assistant header."""
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def response_token_ids(tokenizer: Any, response: str) -> list[int]:
    return list(tokenizer(response, add_special_tokens=False)["input_ids"])


@dataclass
class EncodedExample:
    input_ids: list[int]  # prompt + response token ids
    response_start: int  # index of the first response token
    label: int  # 1 harmful, 0 benign


def encode_example(tokenizer: Any, example: Example, max_length: int) -> EncodedExample:
    """Prompt ids + response ids, concatenated as ids (not re-tokenised as one text)
    so training sees exactly the tokens a streaming guard sees. Over max_length, the
    response keeps its start (where the halting decision matters) and the prompt is
    cut from the left (keeping the assistant header next to the response)."""
    prompt = prompt_token_ids(tokenizer, example.messages)
    response = response_token_ids(tokenizer, example.response)
    if len(prompt) + len(response) > max_length:
        keep_prompt = min(len(prompt), max_length - min(len(response), max_length // 2))
        prompt = prompt[len(prompt) - keep_prompt :]
        response = response[: max_length - keep_prompt]
    return EncodedExample(prompt + response, len(prompt), int(example.label))


def collate(encoded: list[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded training batch with a mask over exactly the response tokens."""
    T = max(len(e.input_ids) for e in encoded)
    B = len(encoded)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros(B, T, dtype=torch.long)  # (B, T)
    response_mask = torch.zeros(B, T, dtype=torch.bool)  # (B, T)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        attention_mask[i, :n] = 1
        response_mask[i, e.response_start : n] = True
    labels = torch.tensor([e.label for e in encoded], dtype=torch.long)  # (B,)
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        labels=labels,
    )


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


# ------------------------------------------------------------------- scoring helpers


def aggregate_scores(
    probs: list[float], aggregator: str = "cummax", ema_alpha: float = 2 / 17
) -> list[float]:
    """Turn per-token probabilities into the streaming guard's running score."""
    from classifiers.ml.streaming import make_aggregator  # local: avoid a cycle

    agg = make_aggregator(aggregator, ema_alpha)
    return [agg.update(p) for p in probs]


def final_scores(per_token_scores: list[list[float]]) -> list[float]:
    """One score per response: the max over its tokens (0.0 for an empty one)."""
    return [max(s) if s else 0.0 for s in per_token_scores]


def halting_positions(
    per_token_scores: list[list[float]], threshold: float | Sequence[float]
) -> list[int | None]:
    """First token index whose running max reaches threshold, else None.
    `threshold`: one number, or one per response (per-category thresholds)."""
    thresholds = (
        [threshold] * len(per_token_scores) if isinstance(threshold, (int, float)) else threshold
    )
    return [
        next((i for i, s in enumerate(scores) if s >= t), None)
        for scores, t in zip(per_token_scores, thresholds, strict=True)
    ]


@torch.no_grad()
def score_responses(
    model: CausalLMWithValueHead,
    tokenizer: Any,
    examples: list[Example],
    *,
    batch_size: int = 8,
    max_length: int = 2048,
) -> list[list[float]]:
    """Per-token harmful probability over each response (one full forward each)."""
    was_training = model.training
    model.eval()
    encoded = [encode_example(tokenizer, ex, max_length) for ex in examples]
    out: list[list[float]] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        batch = collate(chunk, _pad_id(tokenizer))
        res = model(
            batch["input_ids"].to(model.device),
            batch["attention_mask"].to(model.device),
            compute_lm_logits=False,
        )
        probs = torch.sigmoid(res.values).cpu()  # (B, T)
        for i, e in enumerate(chunk):
            out.append(probs[i, e.response_start : len(e.input_ids)].tolist())
    model.train(was_training)
    return out


# -------------------------------------------------------------------------- training


@dataclass
class OutputTrainResult:
    model: CausalLMWithValueHead  # backbone + trained head (eval mode)
    tokenizer: Any  # the backbone's tokenizer (chat template included)
    config: OutputClassifierConfig
    history: list[dict[str, Any]]  # per epoch: epoch, step, loss, val_loss, val_auroc
    tokens_per_s: float  # training-set tokens x epochs / wall time (encode included)
    val_scores: list[list[float]] = field(default_factory=list)  # per-token probs


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


def _pad_features(
    feats: list[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    R = max(max(len(f) for f in feats), 1)
    x = torch.zeros(len(feats), R, feats[0].shape[-1], device=device)  # (B, R, F)
    mask = torch.zeros(len(feats), R, dtype=torch.bool, device=device)  # (B, R)
    for i, f in enumerate(feats):
        x[i, : len(f)] = f.to(device)
        mask[i, : len(f)] = True
    return x, mask


def classifier_loss(
    cfg: OutputClassifierConfig,
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    progress: float,
) -> torch.Tensor:
    if cfg.loss == "running_max":
        return running_max_loss(logits, labels, mask, progress)
    return window_loss(logits, labels, mask, cfg.window)


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
            x, mask = _pad_features([train_feats[i] for i in idx], device)
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
                x, mask = _pad_features(val_feats, device)
                logits = head(x)  # (B, R)
                y = torch.tensor(val_labels, device=device)
                val_loss = classifier_loss(cfg, logits, y, mask, 1.0).item()
                probs = torch.sigmoid(logits).cpu()
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
    device, pad_id = model.device, _pad_id(tokenizer)
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
            probs, mask = _pad_features(
                [torch.tensor(p).unsqueeze(-1) for p in val_probs], torch.device("cpu")
            )
            logits = torch.logit(probs.squeeze(-1).clamp(_EPS, 1 - _EPS))  # (B, R)
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
        pad = _pad_id(tokenizer)
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
    from classifiers.ml.checkpoints import save_artifact

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

    from classifiers.ml.checkpoints import load_artifact

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
