"""Scoring prompts with a trained input classifier.

`score_texts` scores every canonical view of a prompt (text/canonical.py: decoded
base64, ROT13, folded homoglyphs, frames taken off, ...) and takes the maximum, so
encoding a request does not hide it from the classifier. `predict_texts` scores
plain texts; `score_examples` scores Examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from classifiers.ml.input.model import InputClassifier, encode_batch, length_order
from classifiers.ml.types import Example


@dataclass
class InputScore:
    score: float  # harm probability in [0, 1], the max over the views
    category: str  # most likely category on the view that gave the max
    category_prob: float  # its probability
    view: str  # the text of the view that gave the max (the prompt itself or a
    # decoded/folded form of it)
    view_index: int = 0  # 0 = the original text, > 0 = a canonical view
    # The most likely RESTRICTED category and its probability: what a flagged
    # prompt is attributed to (never a permitted category or a traffic pool).
    restricted_category: str = ""
    restricted_prob: float = 0.0

    def flagged_as(self) -> tuple[str, float]:
        """(category, probability) to name when this prompt is flagged."""
        if self.restricted_category:
            return self.restricted_category, self.restricted_prob
        return self.category, self.category_prob


# ---------------------------------------------------------------------------- scoring


def _views(
    text: str, canonicalize: bool, known_frames: bool = True
) -> tuple[list[str], list[int]]:
    """(views with the original first, indexes of the views to score)."""
    if not canonicalize:
        return [text], [0]
    try:  # optional: without text/, only the prompt itself is scored (tested)
        from classifiers.ml.text.canonical import prompt_views
    except ModuleNotFoundError as exc:
        if exc.name != "classifiers.ml.text.canonical":
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
    order = length_order(texts)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                batch_texts = [texts[i] for i in index]
                batch = encode_batch(
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
    names = model.cfg.categories
    restricted = set(model.cfg.restricted_categories)
    why = [i for i, name in enumerate(names) if name in restricted]
    for views, scored in views_per_text:
        view_scores = harm[offset : offset + len(scored)]  # (S,)
        best = int(torch.argmax(view_scores))  # first max wins: ties keep the original
        probs = category_probs[offset + best]  # (C,)
        category_index = int(torch.argmax(probs))
        reason_index = why[int(torch.argmax(probs[why]))] if why else None
        results.append(
            InputScore(
                score=float(view_scores[best]),
                category=names[category_index],
                category_prob=float(probs[category_index]),
                view=views[scored[best]],
                view_index=scored[best],
                restricted_category=names[reason_index] if reason_index is not None else "",
                restricted_prob=float(probs[reason_index]) if reason_index is not None else 0.0,
            )
        )
        offset += len(scored)
    return results


def score_examples(
    model: InputClassifier, tokenizer: Any, examples: Sequence[Example], **kwargs: Any
) -> list[InputScore]:
    return score_texts(model, tokenizer, [e.prompt_text for e in examples], **kwargs)
