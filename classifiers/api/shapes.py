"""What API answers look like: numbers, model references, the guard field, SSE.

Shared by the embedded model's chat completions (views.py) and the guarded proxy
to upstream models (proxy.py), so a client reads one shape whichever it uses.
"""

from __future__ import annotations

import json
import math
from typing import Any

from classifiers.ml.serving.engine import GuardResult
from classifiers.models import ModelVersion


def finite(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def model_ref(model: ModelVersion | None) -> dict[str, Any] | None:
    if model is None:
        return None
    return {"id": model.pk, "kind": model.kind, "checksum": model.checksum}


def finish_reason(result: GuardResult) -> str:
    if result.finish_reason in ("blocked", "halted"):
        return "content_filter"
    if result.finish_reason == "length":
        return "length"
    return "stop"


def guard_field(
    result: GuardResult,
    *,
    mode: str,
    input_model: ModelVersion | None,
    output_model: ModelVersion | None,
    conversation_id: int | None,
) -> dict[str, Any]:
    decision = result.input
    return {
        "mode": mode,
        "blocked": result.finish_reason == "blocked",
        "halted": result.finish_reason == "halted",
        "halted_at": result.halted_at,
        "would_block": result.would_block,
        "flagged": result.flag_reason is not None,
        "flag_reason": result.flag_reason,
        "input_score": finite(decision.score) if decision else None,
        "input_category": decision.category if decision else None,
        "input_threshold": finite(decision.threshold) if decision else None,
        "threshold": finite(result.output_threshold),
        "max_output_score": finite(result.max_output_score),
        "token_scores": [{"text": t.text, "score": finite(t.score)} for t in result.tokens],
        "input_model": model_ref(input_model) if mode != "off" else None,
        "output_model": model_ref(output_model) if mode != "off" else None,
        "conversation_id": conversation_id,
    }


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, allow_nan=False)
    return f"data: {data}\n\n".encode()
