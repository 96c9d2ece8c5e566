"""Training the input classifier.

Two modes:
- "fast": the encoder is frozen, so each text's embedding never changes; they are
  computed once per dataset and the head trains on the cached vectors. Seconds to
  minutes on CPU, which is what makes the authoring loop interactive.
- "full": the encoder is fine-tuned with the head (lower learning rate for the
  encoder). Better accuracy, much slower, still runs on CPU.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import AutoTokenizer

from classifiers.ml.data.traffic import CATEGORY_PREFIX as TRAFFIC_CATEGORY_PREFIX
from classifiers.ml.device import pick_device
from classifiers.ml.eval.evaluate import auroc
from classifiers.ml.input.losses import input_loss, loss_targets
from classifiers.ml.input.model import (
    IGNORE_CATEGORY,
    InputClassifier,
    InputClassifierConfig,
    embed_texts,
    encode_batch,
    single_thread_on_cpu,
)
from classifiers.ml.types import Example, check_cancelled

logger = logging.getLogger(__name__)


_PROGRESS_S = 0.5  # seconds between throttled progress callbacks


@dataclass
class InputTrainResult:
    model: InputClassifier  # trained, in eval mode
    tokenizer: Any  # the backbone's tokenizer
    history: list[dict[str, Any]]  # one entry per epoch, for live curves
    examples_per_second: float  # training examples processed per second
    train_seconds: float  # wall time of the optimisation loop
    embed_seconds: float  # wall time of the embedding precomputation (fast mode)
    best_epoch: int  # epoch whose weights were kept
    config: InputClassifierConfig  # the config used (categories filled in)


def _lr_lambda(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        # Linear warm-up, then linear decay to 10 % of the peak.
        if step < warmup:
            return (step + 1) / warmup
        remaining = max(1, total_steps - warmup)
        return max(0.1, 1.0 - 0.9 * (step - warmup) / remaining)

    return factor


def _with_categories(
    cfg: InputClassifierConfig, examples: Sequence[Example]
) -> InputClassifierConfig:
    """The head's categories (all found, unless given) and the restricted ones among
    them: a category is restricted when most of its training examples are harmful.
    A traffic pool is never one, whatever its labels (see data/traffic.py)."""
    if not cfg.categories:
        cfg = replace(cfg, categories=sorted({e.category for e in examples}))
    if not cfg.restricted_categories:
        harmful: Counter[str] = Counter(e.category for e in examples if e.label == 1)
        total: Counter[str] = Counter(e.category for e in examples)
        restricted = [
            c for c in cfg.categories
            if 2 * harmful[c] > total[c] and not c.startswith(TRAFFIC_CATEGORY_PREFIX)
        ]  # fmt: skip
        cfg = replace(cfg, restricted_categories=restricted)
    return cfg


@dataclass
class _StepReporter:
    """Counts steps, polls for cancellation and throttles progress callbacks."""

    total: int  # optimisation steps in the whole run
    on_progress: Callable[..., None] | None  # the caller's callback
    should_cancel: Callable[[], bool] | None  # the caller's cancel poll
    step: int = 0  # steps done so far
    last_report: float = 0.0  # perf_counter() of the last callback

    def after_step(self, loss: float, epoch: int) -> None:
        self.step += 1
        now = time.perf_counter()
        # Fast mode does thousands of sub-millisecond steps; the Celery glue only
        # needs a few updates per second.
        if self.on_progress is not None and now - self.last_report >= _PROGRESS_S:
            self.last_report = now
            self.on_progress(
                stage="train", done=self.step, total=self.total, loss=loss, epoch=epoch
            )

    def after_epoch(self, entry: dict[str, Any]) -> None:
        if self.on_progress is not None:
            self.on_progress(stage="train", done=self.step, total=self.total, **entry)


def _run_epoch(
    model: InputClassifier,
    embeddings_for: Callable[[torch.Tensor], torch.Tensor],
    harm_y: torch.Tensor,
    category_y: torch.Tensor,
    weight_y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    permutation: torch.Tensor,
    cfg: InputClassifierConfig,
    reporter: _StepReporter,
    epoch: int,
) -> float:
    """One pass over the training set; returns the mean training loss."""
    model.train()
    loss_sum = 0.0
    for start in range(0, permutation.numel(), cfg.batch_size):
        check_cancelled(reporter.should_cancel, "input classifier run cancelled")
        index = permutation[start : start + cfg.batch_size].to(harm_y.device)
        harm_logit, category_logits = model.head(embeddings_for(index))  # (B,), (B, C)
        loss = input_loss(
            harm_logit,
            category_logits,
            harm_y[index],
            category_y[index],
            cfg.category_loss_weight,
            weight_y[index],
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_value = float(loss.detach())
        loss_sum += loss_value * index.numel()
        reporter.after_step(loss_value, epoch)
    return loss_sum / permutation.numel()


def _optimizer(model: InputClassifier, cfg: InputClassifierConfig) -> torch.optim.AdamW:
    groups = [{"params": list(model.head.parameters()), "lr": cfg.lr}]
    if not model.frozen_backbone:
        # A pretrained encoder needs a much smaller step than a fresh head.
        backbone_params = list(model.backbone.parameters())
        groups.append({"params": backbone_params, "lr": cfg.backbone_lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def train_input_classifier(
    cfg: InputClassifierConfig,
    train: list[Example],
    validation: list[Example],
    *,
    device: str | torch.device | None = None,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    weights: Sequence[float] | None = None,
) -> InputTrainResult:
    """Train the head (fast mode) or encoder + head (full mode) on prompt texts.

    Loss = BCE(harm) + category_loss_weight * CE(category), per example, averaged
    with `weights` (one positive number per training example; default all 1), so a
    caller can make some examples count more, such as labels a reviewer corrected.
    Validation loss stays unweighted (the history's training loss is the weighted
    one, so the two are not comparable when weights differ). Seeded: two runs with
    the same config and data give identical weights on CPU. With validation data and
    restore_best, the epoch with the lowest validation loss is kept.
    """
    if not train:
        raise ValueError("train_input_classifier needs training examples")
    if weights is not None and (
        len(weights) != len(train) or not all(math.isfinite(w) and w > 0 for w in weights)
    ):
        raise ValueError("weights needs one positive finite number per training example")
    cfg = _with_categories(cfg, train)
    target_device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(cfg.backbone_dir)
    train_texts = [e.prompt_text for e in train]
    val_texts = [e.prompt_text for e in validation]

    # fork_rng: seed everything we draw (init, shuffles, dropout) without
    # disturbing the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = InputClassifier(cfg).to(target_device)
        harm_y, category_y = loss_targets(train, cfg.categories, target_device)
        weight_y = torch.tensor(
            [1.0] * len(train) if weights is None else [float(w) for w in weights],
            device=target_device,
        )  # (N,)
        val_harm_y, val_category_y = loss_targets(validation, cfg.categories, target_device)

        embed_started = time.perf_counter()
        train_cache: torch.Tensor | None = None
        val_cache: torch.Tensor | None = None
        if model.frozen_backbone:
            # Embed train + validation in one pass so progress covers both.
            everything = embed_texts(
                model,
                tokenizer,
                train_texts + val_texts,
                batch_size=cfg.embed_batch_size,
                on_progress=on_progress,
                should_cancel=should_cancel,
            )
            train_cache, val_cache = everything[: len(train)], everything[len(train) :]
        embed_seconds = time.perf_counter() - embed_started

        def embeddings_for(index: torch.Tensor) -> torch.Tensor:
            if train_cache is not None:
                return train_cache[index]  # (B, E)
            texts = [train_texts[i] for i in index.tolist()]
            batch = encode_batch(tokenizer, texts, cfg.max_length, target_device)
            return model.embed(**batch)  # (B, E), with gradients into the encoder

        optimizer = _optimizer(model, cfg)
        total_steps = math.ceil(len(train) / cfg.batch_size) * cfg.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(total_steps, cfg.warmup_fraction)
        )
        shuffler = torch.Generator().manual_seed(cfg.seed)
        reporter = _StepReporter(total_steps, on_progress, should_cancel)
        trained_part = model.head if model.frozen_backbone else model

        history: list[dict[str, Any]] = []
        best_state: dict[str, torch.Tensor] | None = None
        best_val_loss, best_epoch = math.inf, cfg.epochs
        train_started = time.perf_counter()
        with single_thread_on_cpu(target_device, model.frozen_backbone):
            for epoch in range(1, cfg.epochs + 1):
                permutation = torch.randperm(len(train), generator=shuffler)
                train_loss = _run_epoch(
                    model,
                    embeddings_for,
                    harm_y,
                    category_y,
                    weight_y,
                    optimizer,
                    scheduler,
                    permutation,
                    cfg,
                    reporter,
                    epoch,
                )
                val_loss, val_auroc, val_accuracy = _validate(
                    model, tokenizer, val_texts, val_cache, val_harm_y, val_category_y
                )
                entry = {
                    "epoch": epoch,
                    "step": reporter.step,
                    "loss": train_loss,
                    "val_loss": val_loss,
                    "val_auroc": val_auroc,
                    "val_category_accuracy": val_accuracy,
                }
                history.append(entry)
                logger.info("input classifier epoch %d: %s", epoch, entry)
                reporter.after_epoch(entry)
                improved = val_loss is not None and val_loss < best_val_loss
                if cfg.restore_best and improved:
                    best_val_loss, best_epoch = val_loss, epoch
                    best_state = copy.deepcopy(trained_part.state_dict())
        train_seconds = time.perf_counter() - train_started

    if best_state is not None:
        trained_part.load_state_dict(best_state)
    model.eval()
    return InputTrainResult(
        model=model,
        tokenizer=tokenizer,
        history=history,
        examples_per_second=len(train) * cfg.epochs / max(train_seconds, 1e-9),
        train_seconds=train_seconds,
        embed_seconds=embed_seconds,
        best_epoch=best_epoch,
        config=cfg,
    )


def _validate(
    model: InputClassifier,
    tokenizer: Any,
    texts: list[str],
    cache: torch.Tensor | None,
    harm_y: torch.Tensor,
    category_y: torch.Tensor,
) -> tuple[float | None, float | None, float | None]:
    cfg = model.cfg
    if not texts:
        return None, None, None
    model.eval()
    with torch.no_grad():
        embeddings = cache
        if embeddings is None:
            embeddings = embed_texts(
                model, tokenizer, texts, batch_size=cfg.embed_batch_size
            )
        harm_logit, category_logits = model.head(embeddings)  # (N,), (N, C)
        loss = input_loss(
            harm_logit, category_logits, harm_y, category_y, cfg.category_loss_weight
        )
    scores = torch.sigmoid(harm_logit).cpu().tolist()
    area = auroc(scores, harm_y.long().cpu().tolist())
    known = category_y != IGNORE_CATEGORY
    accuracy = None
    if bool(known.any()):
        hits = category_logits.argmax(dim=-1)[known] == category_y[known]
        accuracy = float(hits.float().mean())
    return float(loss), (None if math.isnan(area) else area), accuracy
