"""One guard setup for the API and the playground.

Loads the active (and shadow) models once per process and caches them by model
version id, so a request costs a cheap query; a newly activated model is picked up
on the next request. Fast-mode output classifiers share one generator backbone
(the value head is all that differs), so two constitutions cost one LM in memory.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from classifiers.core.model_cache import shared_generator
from classifiers.guard import batch_counters
from classifiers.guard.policy import served_cascade
from classifiers.ml.device import pick_device_name
from classifiers.ml.eval.calibrate import Thresholds
from classifiers.ml.serving.engine import (
    CascadeGuard,
    GuardConfig,
    GuardEngine,
    InputGuard,
)
from classifiers.models import (
    ActiveModel,
    GuardPolicy,
    ModelVersion,
)

logger = logging.getLogger(__name__)


_lock = threading.RLock()


_input_guards: dict[int, InputGuard] = {}


_output_models: dict[int, tuple[Any, Thresholds, Any]] = {}


_cascade_guards: dict[int, CascadeGuard] = {}  # calibration id -> (settings are immutable)


_batchers: dict[int, Any] = {}  # id(lm) -> ContinuousBatcher (models are never evicted)


class GuardUnavailable(Exception):
    """No model can serve this request; the message says what to do."""


def artifact_dir(model: ModelVersion) -> Any:
    return settings.ARTIFACTS_DIR / model.path


def input_guard_for(model: ModelVersion) -> InputGuard:
    from classifiers.ml.input.persistence import load_input_classifier

    cached = _input_guards.get(model.pk)
    if cached is not None:
        return cached
    with _lock:
        if model.pk not in _input_guards:
            loaded = load_input_classifier(artifact_dir(model), device=pick_device_name())
            thresholds = loaded.thresholds or Thresholds.from_dict(model.thresholds)
            _input_guards[model.pk] = InputGuard(loaded.model, loaded.tokenizer, thresholds)
        return _input_guards[model.pk]


def output_model_for(model: ModelVersion) -> tuple[Any, Thresholds, Any]:
    """(CausalLMWithValueHead, thresholds, classifier config) for a model version."""
    from classifiers.ml.checkpoints import load_artifact
    from classifiers.ml.output.model import OutputClassifierConfig
    from classifiers.ml.output.persistence import load_output_classifier
    from classifiers.ml.output.value_head import CausalLMWithValueHead

    cached = _output_models.get(model.pk)
    if cached is not None:
        return cached
    with _lock:
        if model.pk not in _output_models:
            artifact = load_artifact(artifact_dir(model))
            cfg = OutputClassifierConfig.from_dict(artifact.config["classifier"])
            thresholds = Thresholds.from_dict(
                artifact.extra.get("thresholds") or model.thresholds
            )
            if cfg.mode == "fast":
                # A probe on the frozen generator: reuse the shared backbone.
                lm, _ = shared_generator()
                wrapped = CausalLMWithValueHead(lm, cfg.layers, cfg.dropout)
                wrapped.load_head_state_dict(artifact.tensors["head"])
                wrapped.to(lm.device).eval()
            else:
                wrapped = load_output_classifier(artifact_dir(model), device=pick_device_name()).model
            _output_models[model.pk] = (wrapped, thresholds, cfg)
        return _output_models[model.pk]


def batcher_for(lm: Any, tokenizer: Any) -> Any | None:
    """The one ContinuousBatcher of a loaded generator, shared by every request that
    generates with it; None when batching is off (GUARDWEB_GENERATION_BATCH=1)."""
    from classifiers.ml.serving.batching import ContinuousBatcher, supports_batching

    if settings.GENERATION_BATCH <= 1 or not supports_batching(lm.config):
        return None
    cached = _batchers.get(id(lm))
    if cached is not None:
        return cached

    with _lock:
        if id(lm) not in _batchers:
            # A label for /metrics: the model folder's name, numbered if it repeats.
            name = Path(getattr(lm.config, "_name_or_path", "") or type(lm).__name__).name
            taken = {b.name for b in _batchers.values()}
            if name in taken:
                name = f"{name}-{len(taken) + 1}"
            _batchers[id(lm)] = ContinuousBatcher(
                lm, tokenizer, max_batch=settings.GENERATION_BATCH, name=name,
                on_stats=batch_counters.publisher(name),
            )
        return _batchers[id(lm)]


def batchers() -> list[Any]:
    return list(_batchers.values())


def active_models(constitution: Any) -> tuple[ModelVersion | None, ModelVersion | None]:
    rows = {
        a.kind: a.model_version
        for a in ActiveModel.objects.filter(constitution=constitution).select_related(
            "model_version"
        )
    }
    return rows.get("input"), rows.get("output")


def cascade_guard_for(calibration: Any) -> CascadeGuard:
    """The heavy half of a served cascade, one per calibration and process, so every
    stream that escalates shares its model and the lock its forwards take turns on."""
    from classifiers.ml.serving.cascade import CascadeSettings

    cached = _cascade_guards.get(calibration.pk)
    if cached is not None:
        return cached
    heavy, _, heavy_cfg = output_model_for(calibration.heavy_model)
    _, tokenizer = shared_generator()
    with _lock:
        if calibration.pk not in _cascade_guards:
            _cascade_guards[calibration.pk] = CascadeGuard(
                CascadeSettings.from_dict(calibration.settings), heavy, tokenizer,
                aggregator=heavy_cfg.aggregator, ema_alpha=heavy_cfg.ema_alpha,
            )  # fmt: skip
        return _cascade_guards[calibration.pk]


def build_engine(
    input_model: ModelVersion | None,
    output_model: ModelVersion | None,
    *,
    generates: bool = True,
    cascade: Any = None,  # a served CascadeCalibration whose probe is output_model
) -> GuardEngine:
    """`generates=False` for engines that only score (shadow models): no batcher."""
    lm, tokenizer = shared_generator()
    input_guard = input_guard_for(input_model) if input_model else None
    output = output_model_for(output_model) if output_model else None
    aggregator, ema_alpha = "cummax", None
    if output is not None:
        aggregator, ema_alpha = output[2].aggregator, output[2].ema_alpha
        lm = output[0].lm
    return GuardEngine(
        cascade=cascade_guard_for(cascade) if cascade is not None and output else None,
        input_guard=input_guard,
        output_model=output[0] if output else None,
        output_thresholds=output[1] if output else None,
        lm=lm,
        tokenizer=tokenizer,
        aggregator=aggregator,
        ema_alpha=ema_alpha,
        batcher=batcher_for(lm, tokenizer) if generates else None,
    )


@dataclass
class GuardSetup:
    """Everything a request needs to run the guard for one constitution."""

    constitution: Any
    policy: GuardPolicy
    mode: str
    input_model: ModelVersion | None
    output_model: ModelVersion | None
    engine: GuardEngine
    shadow_engine: GuardEngine | None
    cascade: Any = None  # the served CascadeCalibration, if any
    unguarded_engine: GuardEngine | None = None  # side by side: the same LM, no guard

    def config(self, *, max_new_tokens: int | None = None, mode: str | None = None) -> GuardConfig:
        limit = self.policy.max_new_tokens
        return GuardConfig(
            mode=mode or self.mode,
            max_new_tokens=min(max_new_tokens or limit, limit),
        )


def guard_setup(
    constitution: Any,
    *,
    mode: str | None = None,
    models: tuple[ModelVersion | None, ModelVersion | None] | None = None,
    side_by_side: bool = False,
    with_shadow: bool = True,
    require_models: bool = True,
) -> GuardSetup:
    """The guard for one request to `constitution`, for the API and the playground.

    `models` (input, output) replaces the active pair (the playground's other
    training runs, or (None, None) for unguarded); `side_by_side` adds an unguarded
    engine on the same generator; `with_shadow=False` skips loading shadow models.
    """
    policy = GuardPolicy.for_constitution(constitution)
    effective = mode or policy.mode
    input_model, output_model = models if models is not None else active_models(constitution)
    if require_models and effective != "off" and input_model is None and output_model is None:
        raise GuardUnavailable(
            f"constitution {constitution.slug!r} has no active classifier yet; "
            "train one and activate it (or use mode 'off')"
        )

    # The served probe cascade applies whenever its probe is the output model here.
    cascade = served_cascade(policy, output_model)
    engine = build_engine(input_model, output_model, cascade=cascade)
    shadow_engine = None
    if with_shadow and (policy.shadow_input_model_id or policy.shadow_output_model_id):
        shadow_engine = build_engine(
            policy.shadow_input_model, policy.shadow_output_model, generates=False
        )
    return GuardSetup(
        constitution, policy, effective, input_model, output_model, engine, shadow_engine,
        cascade, unguarded_engine=build_engine(None, None) if side_by_side else None,
    )  # fmt: skip


def shadow_decision(setup: GuardSetup, messages: list[dict[str, str]], reply: str) -> dict[str, Any]:
    """What the shadow model would have decided on the same prompt and reply."""
    if setup.shadow_engine is None:
        return {}
    from classifiers.ml.serving.engine import run_to_end

    result = run_to_end(
        setup.shadow_engine.stream_upstream(messages, [reply] if reply else [], GuardConfig(mode="shadow"))
    )
    return {
        "input_score": result.input.score if result.input else None,
        "input_flagged": bool(result.input and result.input.flagged),
        "max_output_score": result.max_output_score,
        "would_block": result.would_block,
        "input_model": setup.policy.shadow_input_model_id,
        "output_model": setup.policy.shadow_output_model_id,
    }
