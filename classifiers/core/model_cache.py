"""Models loaded once per process and shared: the local generator (SmolLM2 unless
configured) for the guard and for generation, and the sentence embedder.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings

from classifiers.ml.device import pick_device_name
from classifiers.ml.types import ChatGenerator

_lock = threading.Lock()
_shared_lm: dict[str, tuple[Any, Any]] = {}


def shared_generator() -> tuple[Any, Any]:
    """The local generator (SmolLM2 unless configured), loaded once per process."""
    import torch

    from classifiers.ml.output.model import load_backbone
    from classifiers.ml.registry import generator_dir

    directory = str(generator_dir(settings.GENERATOR_MODEL_DIR or None, data_dir=settings.DATA_DIR))
    cached = _shared_lm.get(directory)
    if cached is not None:  # the common case: no lock, so loads elsewhere never stall it
        return cached
    with _lock:
        if directory not in _shared_lm:
            if settings.TORCH_THREADS:
                torch.set_num_threads(settings.TORCH_THREADS)
            lm, tokenizer = load_backbone(directory, torch.device(pick_device_name()))
            lm.requires_grad_(False)
            _shared_lm[directory] = (lm, tokenizer)
        return _shared_lm[directory]


# The local model is loaded once per worker process (a few seconds, ~0.5 GB).
_local_lock = threading.Lock()


_local_generator: ChatGenerator | None = None


def local_generator() -> ChatGenerator:
    global _local_generator
    with _local_lock:
        if _local_generator is None:
            from classifiers.ml import registry
            from classifiers.ml.generation.local import LocalGenerator

            _local_generator = LocalGenerator.from_dir(
                registry.generator_dir(data_dir=settings.DATA_DIR),
                device=pick_device_name(),
            )
        return _local_generator


_embedder: Any = None


def relevance_embedder() -> Any:
    """The input classifier's frozen encoder, for Stage I's relevance filter (cached)."""
    global _embedder
    with _local_lock:
        if _embedder is None:
            from classifiers.ml import registry
            from classifiers.ml.input.model import sentence_embedder

            _embedder = sentence_embedder(
                registry.encoder_dir(settings.ENCODER_MODEL_DIR or None),
                device=pick_device_name(),
            )
        return _embedder
