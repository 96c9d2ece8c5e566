"""The input classifier's model: a sentence encoder plus a small head.

A BERT-style sentence encoder (all-MiniLM-L6-v2 in production: mean pooling over
the attention mask, then L2 normalisation, exactly as sentence-transformers does)
feeds InputHead, with two outputs: one harm logit and one logit per constitution
category (restricted and permitted), so a flagged prompt can say *why*.
`encode_batch` / `embed_texts` run the encoder; `sentence_embedder` is the frozen
encoder alone (Stage I relevance filtering).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from classifiers.ml.device import pick_device
from classifiers.ml.types import check_cancelled

ARTIFACT_KIND = "input_classifier"


IGNORE_CATEGORY = -100  # cross-entropy target for examples of an unknown category


@dataclass
class InputClassifierConfig:
    backbone_dir: str  # local folder of a BERT-style encoder + tokenizer (no hub)
    categories: list[str] = field(default_factory=list)  # category head's classes;
    # empty = the sorted categories found in the training data
    # The categories a flagged prompt may be attributed to: the restricted ones
    # (most of their training examples harmful). Empty (artifacts from before):
    # every category may be named.
    restricted_categories: list[str] = field(default_factory=list)
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


@contextlib.contextmanager
def single_thread_on_cpu(device: torch.device, enabled: bool) -> Iterator[None]:
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
            from transformers import AutoModel  # heavy: only when loading a backbone

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


def length_order(texts: Sequence[str]) -> list[int]:
    # Similar lengths in one batch waste less compute on padding; characters are a
    # good enough proxy for tokens and cost nothing.
    return sorted(range(len(texts)), key=lambda i: len(texts[i]))


def encode_batch(
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
    order = length_order(texts)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                check_cancelled(should_cancel, "input classifier run cancelled")
                index = order[start : start + batch_size]
                batch = encode_batch(
                    tokenizer, [texts[i] for i in index], model.cfg.max_length, device
                )
                result[torch.tensor(index, device=device)] = model.embed(**batch)
                if on_progress is not None:
                    done = min(start + batch_size, len(order))
                    on_progress(stage="embed", done=done, total=len(order))
    finally:
        model.train(was_training)
    return result


def sentence_embedder(
    backbone_dir: str | Path, *, device: str | torch.device | None = None
) -> Callable[[Sequence[str]], Any]:
    """texts -> (N, E) numpy array of mean-pooled, L2-normalised embeddings.

    The frozen encoder the input classifier uses, without a trained head: Stage I
    uses it to keep generated queries that sit with their category.
    """
    cfg = InputClassifierConfig(backbone_dir=str(backbone_dir), categories=["any"])
    from transformers import AutoTokenizer  # heavy: only when loading a backbone

    model = InputClassifier(cfg).to(pick_device(device))
    tokenizer = AutoTokenizer.from_pretrained(str(backbone_dir))

    def embed(texts: Sequence[str]) -> Any:
        return embed_texts(model, tokenizer, list(texts)).cpu().numpy()

    return embed
