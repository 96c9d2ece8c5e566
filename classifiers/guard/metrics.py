"""Prometheus /metrics: guarded turns, review queue, batching engine."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db.models import Count, Exists, OuterRef, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from classifiers.guard import batch_counters
from classifiers.guard.engines import batchers
from classifiers.models import Conversation, ReviewItem, ReviewStatus, Turn

logger = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# Seconds. Guard latency covers generation, so the buckets reach a minute.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


_LABEL_ESCAPE = re.compile(r'[\\"\n]')


def _label(value: Any) -> str:
    return _LABEL_ESCAPE.sub(lambda m: {"\\": "\\\\", '"': '\\"', "\n": "\\n"}[m.group()], str(value))


def _sample(name: str, value: float, labels: dict[str, Any] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {_number(value)}"
    return f"{name} {_number(value)}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _histogram(name: str, help_text: str, field: str) -> list[str]:
    """A cumulative histogram of a Turn millisecond column, in seconds, in one query."""

    turns = Turn.objects.filter(variant=Turn.Variant.GUARDED, **{f"{field}__isnull": False})
    aggregates: dict[str, Any] = {
        f"le_{i}": Count("id", filter=Q(**{f"{field}__lte": bound * 1000}))
        for i, bound in enumerate(LATENCY_BUCKETS)
    }
    row = turns.aggregate(count=Count("id"), total=Sum(field), **aggregates)
    samples = [
        _sample(f"{name}_bucket", row[f"le_{i}"], {"le": repr(bound)})
        for i, bound in enumerate(LATENCY_BUCKETS)
    ]
    samples.append(_sample(f"{name}_bucket", row["count"], {"le": "+Inf"}))
    samples.append(_sample(f"{name}_sum", float(row["total"] or 0.0) / 1000))
    samples.append(_sample(f"{name}_count", row["count"]))
    return _family(name, "histogram", help_text, samples)


def exposition() -> str:

    lines: list[str] = []
    guarded = Turn.objects.filter(conversation=OuterRef("pk"), variant=Turn.Variant.GUARDED)
    conversations = (
        Conversation.objects.annotate(
            blocked=Exists(guarded.filter(finish_reason="blocked")),
            halted=Exists(guarded.filter(finish_reason="halted")),
        )
        .values("source", "constitution__slug", "blocked", "halted")
        .annotate(n=Count("id"))
        .order_by("source", "constitution__slug")
    )
    samples = []
    for row in conversations:
        decision = "blocked" if row["blocked"] else "halted" if row["halted"] else "passed"
        labels = {"source": row["source"], "constitution": row["constitution__slug"] or "",
                  "decision": decision}  # fmt: skip
        samples.append(_sample("guardweb_conversations_total", row["n"], labels))
    lines += _family(
        "guardweb_conversations_total", "counter",
        "Guarded conversations by source, constitution and outcome "
        "(blocked: an input was blocked; halted: a reply was halted).",
        samples,
    )  # fmt: skip

    turns = (
        Turn.objects.filter(variant=Turn.Variant.GUARDED)
        .values("conversation__source", "finish_reason")
        .annotate(n=Count("id"))
        .order_by("conversation__source", "finish_reason")
    )
    lines += _family(
        "guardweb_turns_total", "counter", "Guarded turns by source and finish reason.",
        (_sample("guardweb_turns_total", r["n"],
                 {"source": r["conversation__source"], "finish_reason": r["finish_reason"] or "none"})
         for r in turns),
    )  # fmt: skip

    cascaded = (
        Turn.objects.filter(variant=Turn.Variant.GUARDED, cascaded=True)
        .aggregate(n=Count("id"), escalated=Count("id", filter=Q(escalated_at__isnull=False)))
    )  # fmt: skip
    counts = {"yes": cascaded["escalated"], "no": cascaded["n"] - cascaded["escalated"]}
    lines += _family(
        "guardweb_cascade_turns_total", "counter",
        "Guarded turns scored by a probe cascade, by whether the heavy classifier joined "
        "(the live escalation rate is yes / (yes + no)).",
        (_sample("guardweb_cascade_turns_total", n, {"escalated": k}) for k, n in counts.items()),
    )  # fmt: skip

    flagged = (
        Conversation.objects.filter(flagged=True)
        .values("flag_reason").annotate(n=Count("id")).order_by("flag_reason")
    )  # fmt: skip
    lines += _family(
        "guardweb_flagged_conversations_total", "counter", "Flagged conversations by reason.",
        (_sample("guardweb_flagged_conversations_total", r["n"], {"reason": r["flag_reason"] or "none"})
         for r in flagged),
    )  # fmt: skip

    decisions = (
        ReviewItem.objects.filter(status=ReviewStatus.DECIDED)
        .values("decision").annotate(n=Count("id")).order_by("decision")
    )  # fmt: skip
    lines += _family(
        "guardweb_review_decisions_total", "counter", "Review decisions by type.",
        (_sample("guardweb_review_decisions_total", r["n"], {"decision": r["decision"]})
         for r in decisions),
    )  # fmt: skip

    queue = ReviewItem.objects.aggregate(
        open=Count("id", filter=Q(status=ReviewStatus.OPEN)),
        claimed=Count("id", filter=Q(status=ReviewStatus.CLAIMED)),
    )
    lines += _family(
        "guardweb_review_queue_size", "gauge", "Undecided review items by status.",
        (_sample("guardweb_review_queue_size", queue[s], {"status": s}) for s in ("open", "claimed")),
    )  # fmt: skip

    lines += _histogram(
        "guardweb_guard_latency_seconds", "Guard latency per turn (whole reply).", "latency_ms"
    )
    lines += _histogram(
        "guardweb_first_token_latency_seconds", "Time to the first streamed token.",
        "first_token_ms",
    )  # fmt: skip
    lines += _batching_families()
    return "\n".join(lines) + "\n"


def _batching_families() -> list[str]:
    """Every web process's continuous-batching counters (guard/batch_counters.py),
    one series per process: mean batch = rows / steps, summed by model."""
    try:
        for batcher in batchers():  # this process's, fresh
            batch_counters.publish(batcher.name, batcher.stats)
        counters = batch_counters.read_all()
    except Exception:  # Redis down: this process's own counters still count
        logger.warning("batching counters of other processes unavailable", exc_info=True)
        process = batch_counters.process_label()
        counters = [{"process": process, "model": b.name, "steps": b.stats.steps,
                     "rows": b.stats.row_steps, "max": b.stats.max_batch} for b in batchers()]  # fmt: skip
    steps, rows, largest = [], [], []
    for c in counters:
        labels = {"model": c["model"], "process": c["process"]}
        steps.append(_sample("guardweb_generation_batch_steps_total", c["steps"], labels))
        rows.append(_sample("guardweb_generation_batch_rows_total", c["rows"], labels))
        largest.append(_sample("guardweb_generation_batch_max", c["max"], labels))
    return [
        *_family("guardweb_generation_batch_steps_total", "counter",
                 "Batched decode steps of the local generator, per web process.", steps),
        *_family("guardweb_generation_batch_rows_total", "counter",
                 "Tokens decoded in batched steps, per web process; / steps = mean batch.", rows),
        *_family("guardweb_generation_batch_max", "gauge",
                 "Largest batch of concurrent generations seen, per web process.", largest),
    ]  # fmt: skip


@login_not_required
@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    return HttpResponse(exposition(), content_type=CONTENT_TYPE)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """GUARDWEB_METRICS_ALLOW (client addresses) and GUARDWEB_METRICS_TOKEN (a bearer
    token), when set, both have to pass."""
    if settings.METRICS_ALLOW:
        try:
            client = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            client = None
        if client is None or not any(client in network for network in settings.METRICS_ALLOW):
            return HttpResponse("this address may not read /metrics\n", status=403,
                                content_type="text/plain")  # fmt: skip
    if settings.METRICS_TOKEN:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Bytes: compare_digest refuses non-ASCII str (a 500 for "Bearer é").
        expected = settings.METRICS_TOKEN.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            response = HttpResponse("send the metrics token: Authorization: Bearer <token>\n",
                                    status=401, content_type="text/plain")  # fmt: skip
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return None
