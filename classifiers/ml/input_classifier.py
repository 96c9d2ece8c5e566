"""The input classifier: scores a prompt for harmful intent and names its category.

A BERT-style sentence encoder (all-MiniLM-L6-v2 in production: mean pooling over
the attention mask, then L2 normalisation, exactly as sentence-transformers does)
feeds a small head with two outputs: one harm logit and one logit per constitution
category (restricted and permitted), so a flagged prompt can say *why*.

Two training modes:
- "fast": the encoder is frozen, so each text's embedding never changes; they are
  computed once per dataset and the head trains on the cached vectors. Seconds to
  minutes on CPU, which is what makes the authoring loop interactive.
- "full": the encoder is fine-tuned with the head (lower learning rate for the
  encoder). Better accuracy, much slower, still runs on CPU.

At inference `score_texts` scores every canonical view of a prompt (decoded base64,
ROT13, folded homoglyphs, ...) and takes the maximum, so encoding a request does not
hide it from the classifier.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from classifiers.ml.calibrate import Thresholds
from classifiers.ml.checkpoints import ArtifactError, load_artifact, save_artifact
from classifiers.ml.device import pick_device
from classifiers.ml.evaluate import auroc
from classifiers.ml.types import Example, check_cancelled

logger = logging.getLogger(__name__)

ARTIFACT_KIND = "input_classifier"
IGNORE_CATEGORY = -100  # cross-entropy target for examples of an unknown category
_PROGRESS_S = 0.5  # seconds between throttled progress callbacks


@dataclass
class InputClassifierConfig:
    backbone_dir: str  # local folder of a BERT-style encoder + tokenizer (no hub)
    categories: list[str] = field(default_factory=list)  # category head's classes;
    # empty = the sorted categories found in the training data
    mode: str = "fast"  # "fast": frozen encoder, cached embeddings; "full": fine-tune
    max_length: int = 256  # tokens per prompt; longer prompts are truncated
    hidden: int = 256  # width of the head's shared layer
    dropout: float = 0.1  # dropout in the head
    lr: float = 1e-3  # head learning rate (AdamW)
    # Encoder learning rate, full mode only. 6e-5, not 3e-5: over 32-64 seeds on a
    # reviewed cbrn-demo dataset, 3 epochs at 3e-5 left the encoder undertrained
    # (test TPR at 1% FPR 0.86 mean, 0.73-0.97) and 6e-5 gave 0.95 (0.86-0.99)
    # at the same cost; on a larger dataset two seeds each showed no gain on test
    # (better validation, 0.85 vs 0.88 test mean), and with more reviewed data four
    # seeds reached 0.93-0.96 (docs/BENCHMARKS.md, "Session 12" and "Session 13").
    backbone_lr: float = 6e-5
    epochs: int = 20  # passes over the training set (cheap in fast mode)
    batch_size: int = 32  # training batch size
    weight_decay: float = 0.01  # AdamW weight decay
    category_loss_weight: float = 0.5  # weight of the category cross-entropy
    warmup_fraction: float = 0.1  # share of steps with a linear lr warm-up
    seed: int = 0  # seeds head init, shuffling and dropout
    embed_batch_size: int = 64  # batch size when computing embeddings
    restore_best: bool = True  # keep the epoch with the lowest validation loss

    def __post_init__(self) -> None:
        if self.mode not in ("fast", "full"):
            raise ValueError(f"mode must be 'fast' or 'full', got {self.mode!r}")


@dataclass
class InputScore:
    score: float  # harm probability in [0, 1], the max over the views
    category: str  # most likely category on the view that gave the max
    category_prob: float  # its probability
    view: str  # the text of the view that gave the max (the prompt itself or a
    # decoded/folded form of it)
    view_index: int = 0  # 0 = the original text, > 0 = a canonical view


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


@contextlib.contextmanager
def _single_thread_on_cpu(device: torch.device, enabled: bool) -> Iterator[None]:
    """Run a block with one intra-op thread on CPU.

    Training the head on cached embeddings multiplies tiny matrices; extra OpenMP
    threads only add synchronisation, and on a busy machine their spin-waiting made
    each step ~30x slower (0.4 ms vs 14 ms measured on 2 shared cores). The thread
    count is process-wide, so it is restored afterwards.
    """
    if not enabled or device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class InputHead(nn.Module):
    """Shared MLP, then a harm logit and category logits."""

    def __init__(
        self, embedding_dim: int, hidden: int, n_categories: int, dropout: float
    ) -> None:
        super().__init__()
        # Sentence embeddings are L2-normalised (per-dimension values ~ 1/sqrt(E));
        # LayerNorm rescales them so the default init and lr work.
        self.norm = nn.LayerNorm(embedding_dim)
        self.shared = nn.Sequential(
            nn.Linear(embedding_dim, hidden), nn.GELU(), nn.Dropout(dropout)
        )
        self.harm = nn.Linear(hidden, 1)
        self.category = nn.Linear(hidden, n_categories)

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.shared(self.norm(embeddings))  # (B, H)
        harm_logit = self.harm(hidden).squeeze(-1)  # (B,)
        category_logits = self.category(hidden)  # (B, C)
        return harm_logit, category_logits


class InputClassifier(nn.Module):
    def __init__(self, cfg: InputClassifierConfig, backbone: nn.Module | None = None):
        super().__init__()
        if not cfg.categories:
            raise ValueError("InputClassifierConfig.categories must not be empty")
        self.cfg = cfg
        if backbone is None:
            # float32 explicitly: the head and the CPU path assume it, whatever
            # dtype the checkpoint was saved in.
            backbone = AutoModel.from_pretrained(cfg.backbone_dir, dtype=torch.float32)
        self.backbone = backbone
        embedding_dim = int(self.backbone.config.hidden_size)
        self.head = InputHead(
            embedding_dim, cfg.hidden, len(cfg.categories), cfg.dropout
        )
        if self.frozen_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    @property
    def frozen_backbone(self) -> bool:
        return self.cfg.mode == "fast"

    @property
    def categories(self) -> list[str]:
        return list(self.cfg.categories)

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    def train(self, mode: bool = True) -> InputClassifier:
        super().train(mode)
        if self.frozen_backbone:
            # A frozen encoder must never run with dropout, or cached embeddings
            # would not match what the head sees at inference.
            self.backbone.eval()
        return self

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean-pooled, L2-normalised sentence embeddings (B, E)."""
        if self.frozen_backbone:
            with torch.no_grad():
                return self._embed(input_ids, attention_mask)
        return self._embed(input_ids, attention_mask)

    def _embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state  # (B, T, E)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        summed = (hidden * mask).sum(dim=1)  # (B, E)
        pooled = summed / mask.sum(dim=1).clamp(min=1e-9)  # (B, E)
        return F.normalize(pooled, p=2, dim=-1)  # (B, E)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.embed(input_ids, attention_mask))  # (B,), (B, C)


# ------------------------------------------------------------------ batching helpers


def _length_order(texts: Sequence[str]) -> list[int]:
    # Similar lengths in one batch waste less compute on padding; characters are a
    # good enough proxy for tokens and cost nothing.
    return sorted(range(len(texts)), key=lambda i: len(texts[i]))


def _encode(
    tokenizer: Any, texts: Sequence[str], max_length: int, device: torch.device
) -> dict[str, torch.Tensor]:
    batch = tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return {
        "input_ids": batch["input_ids"].to(device),
        "attention_mask": batch["attention_mask"].to(device),
    }


def embed_texts(
    model: InputClassifier,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Sentence embeddings (N, E) in the input order, on the model's device."""
    device = model.device
    embedding_dim = model.head.norm.normalized_shape[0]
    result = torch.empty(len(texts), embedding_dim, device=device)  # (N, E)
    order = _length_order(texts)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                check_cancelled(should_cancel, "input classifier run cancelled")
                index = order[start : start + batch_size]
                batch = _encode(
                    tokenizer, [texts[i] for i in index], model.cfg.max_length, device
                )
                result[torch.tensor(index, device=device)] = model.embed(**batch)
                if on_progress is not None:
                    done = min(start + batch_size, len(order))
                    on_progress(stage="embed", done=done, total=len(order))
    finally:
        model.train(was_training)
    return result


# ----------------------------------------------------------------------------- training


def _targets(
    examples: Sequence[Example], categories: list[str], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    index = {name: i for i, name in enumerate(categories)}
    unknown = sorted({e.category for e in examples} - set(index))
    if unknown:
        logger.warning("categories unknown to the head (no category loss): %s", unknown)
    harm = torch.tensor([float(e.label) for e in examples], device=device)  # (N,)
    category = torch.tensor(
        [index.get(e.category, IGNORE_CATEGORY) for e in examples], device=device
    )  # (N,)
    return harm, category


def _loss(
    harm_logit: torch.Tensor,
    category_logits: torch.Tensor,
    harm_target: torch.Tensor,
    category_target: torch.Tensor,
    category_weight: float,
    example_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCE(harm) + category_weight * CE(category); with example_weight (B,), each
    example's terms are weighted and the batch is a weighted mean."""
    weight = torch.ones_like(harm_target) if example_weight is None else example_weight
    per_example = F.binary_cross_entropy_with_logits(
        harm_logit, harm_target, reduction="none"
    )  # (B,)
    loss = (per_example * weight).sum() / weight.sum()
    known = category_target != IGNORE_CATEGORY
    # cross_entropy of an all-ignored batch is NaN; skip the term instead.
    if category_weight > 0 and bool(known.any()):
        category_terms = F.cross_entropy(
            category_logits[known], category_target[known], reduction="none"
        )  # (K,)
        known_weight = weight[known]
        loss = loss + category_weight * (category_terms * known_weight).sum() / known_weight.sum()
    return loss


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
    if cfg.categories:
        return cfg
    return replace(cfg, categories=sorted({e.category for e in examples}))


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
        loss = _loss(
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
        harm_y, category_y = _targets(train, cfg.categories, target_device)
        weight_y = torch.tensor(
            [1.0] * len(train) if weights is None else [float(w) for w in weights],
            device=target_device,
        )  # (N,)
        val_harm_y, val_category_y = _targets(validation, cfg.categories, target_device)

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
            batch = _encode(tokenizer, texts, cfg.max_length, target_device)
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
        with _single_thread_on_cpu(target_device, model.frozen_backbone):
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
        loss = _loss(
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


# ---------------------------------------------------------------------------- scoring


def _views(
    text: str, canonicalize: bool, known_frames: bool = True
) -> tuple[list[str], list[int]]:
    """(views with the original first, indexes of the views to score)."""
    if not canonicalize:
        return [text], [0]
    try:
        from classifiers.ml.canonical import prompt_views
    except ModuleNotFoundError as exc:
        if exc.name != "classifiers.ml.canonical":
            raise
        return [text], [0]
    views = prompt_views(text, known_frames=known_frames)
    return list(views.texts), views.scored


def predict_texts(
    model: InputClassifier,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Harm probabilities (N,) and category probabilities (N, C), on CPU."""
    harm = torch.empty(len(texts))  # (N,)
    categories = torch.empty(len(texts), len(model.cfg.categories))  # (N, C)
    order = _length_order(texts)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                batch_texts = [texts[i] for i in index]
                batch = _encode(
                    tokenizer, batch_texts, model.cfg.max_length, model.device
                )
                harm_logit, category_logits = model(**batch)  # (B,), (B, C)
                harm[index] = torch.sigmoid(harm_logit).float().cpu()
                categories[index] = torch.softmax(category_logits, dim=-1).float().cpu()
    finally:
        model.train(was_training)
    return harm, categories


def score_texts(
    model: InputClassifier,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    canonicalize: bool = True,
    known_frames: bool = True,
) -> list[InputScore]:
    """Score each text; with canonicalize, the max over its canonical views.

    Views whose surface is an encoding of another view are not scored, nor (with
    known_frames, as served; see canonical.prompt_views) one of the augmenter's
    own jailbreak frames around another view. All scored views of all
    texts go through the model in one batched pass.
    """
    views_per_text = [_views(text, canonicalize, known_frames) for text in texts]
    flat = [views[i] for views, scored in views_per_text for i in scored]
    harm, category_probs = predict_texts(model, tokenizer, flat, batch_size=batch_size)
    results: list[InputScore] = []
    offset = 0
    for views, scored in views_per_text:
        view_scores = harm[offset : offset + len(scored)]  # (S,)
        best = int(torch.argmax(view_scores))  # first max wins: ties keep the original
        probs = category_probs[offset + best]  # (C,)
        category_index = int(torch.argmax(probs))
        results.append(
            InputScore(
                score=float(view_scores[best]),
                category=model.cfg.categories[category_index],
                category_prob=float(probs[category_index]),
                view=views[scored[best]],
                view_index=scored[best],
            )
        )
        offset += len(scored)
    return results


def score_examples(
    model: InputClassifier, tokenizer: Any, examples: Sequence[Example], **kwargs: Any
) -> list[InputScore]:
    return score_texts(model, tokenizer, [e.prompt_text for e in examples], **kwargs)


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


def sentence_embedder(
    backbone_dir: str | Path, *, device: str | torch.device | None = None
) -> Callable[[Sequence[str]], Any]:
    """texts -> (N, E) numpy array of mean-pooled, L2-normalised embeddings.

    The frozen encoder the input classifier uses, without a trained head: Stage I
    uses it to keep generated queries that sit with their category.
    """
    cfg = InputClassifierConfig(backbone_dir=str(backbone_dir), categories=["any"])
    model = InputClassifier(cfg).to(pick_device(device))
    tokenizer = AutoTokenizer.from_pretrained(str(backbone_dir))

    def embed(texts: Sequence[str]) -> Any:
        return embed_texts(model, tokenizer, list(texts)).cpu().numpy()

    return embed
