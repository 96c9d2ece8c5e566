"""The dashboard's numbers (guarded traffic, blocks, latency, queue) and its live
counters, pushed to every open dashboard at most once a second.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Aggregate, Count, FloatField, Min, Q, QuerySet
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from classifiers.models import (
    Decision,
    ReviewItem,
    ReviewStatus,
    Turn,
)

logger = logging.getLogger(__name__)

RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


HOURLY_UP_TO = timedelta(days=2)  # longer ranges are bucketed per day


BLOCKING_FINISHES = ("blocked", "halted")


class Percentile(Aggregate):
    """PostgreSQL's PERCENTILE_CONT(fraction) WITHIN GROUP (ORDER BY expr)."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=float(fraction), **extra)


def _blocks(prefix: str = "") -> Q:
    """The active model blocked, halted, or (shadow mode) would have."""
    return Q(**{f"{prefix}finish_reason__in": BLOCKING_FINISHES}) | Q(
        **{f"{prefix}would_block": True}
    )


def guarded_turns(start: datetime, end: datetime, constitution: Any = None) -> QuerySet[Turn]:
    turns = Turn.objects.filter(
        variant=Turn.Variant.GUARDED, created_at__gte=start, created_at__lt=end
    )
    if constitution is not None:
        turns = turns.filter(conversation__constitution=constitution)
    return turns


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _bucket_starts(start: datetime, end: datetime, hourly: bool) -> list[datetime]:
    start = timezone.localtime(start)
    if hourly:
        first = start.replace(minute=0, second=0, microsecond=0)
        step = timedelta(hours=1)
    else:
        first = start.replace(hour=0, minute=0, second=0, microsecond=0)
        step = timedelta(days=1)
    out = []
    current = first
    while current < end and len(out) < 2000:
        out.append(current)
        current += step
    return out


def dashboard_stats(start: datetime, end: datetime, constitution: Any = None) -> dict[str, Any]:
    """Everything the dashboard shows for [start, end), one constitution or all."""
    turns = guarded_turns(start, end, constitution)
    totals = turns.aggregate(
        total=Count("id"),
        blocked=Count("id", filter=Q(finish_reason="blocked")),
        halted=Count("id", filter=Q(finish_reason="halted")),
        flagged=Count("id", filter=~Q(flag_reason="")),
        latency_p50=Percentile("latency_ms", 0.5),
        latency_p95=Percentile("latency_ms", 0.95),
        first_token_p50=Percentile("first_token_ms", 0.5),
        first_token_p95=Percentile("first_token_ms", 0.95),
    )
    totals["block_rate"] = _rate(totals["blocked"], totals["total"])
    totals["halt_rate"] = _rate(totals["halted"], totals["total"])
    totals["conversations"] = turns.values("conversation").distinct().count()

    hourly = end - start <= HOURLY_UP_TO
    trunc = TruncHour if hourly else TruncDay
    rows = {
        row["bucket"]: row
        for row in turns.annotate(bucket=trunc("created_at"))
        .values("bucket")
        .annotate(
            total=Count("id"),
            blocked=Count("id", filter=Q(finish_reason="blocked")),
            halted=Count("id", filter=Q(finish_reason="halted")),
            flagged=Count("id", filter=~Q(flag_reason="")),
            p50=Percentile("latency_ms", 0.5),
            p95=Percentile("latency_ms", 0.95),
            ft50=Percentile("first_token_ms", 0.5),
            ft95=Percentile("first_token_ms", 0.95),
        )
        .order_by("bucket")
    }
    series: dict[str, list[Any]] = {
        k: [] for k in ("labels", "total", "passed", "blocked", "halted", "flagged",
                        "block_rate", "halt_rate", "p50", "p95", "ft50", "ft95")
    }  # fmt: skip
    for bucket in _bucket_starts(start, end, hourly):
        row = rows.get(bucket, {})
        total = row.get("total", 0)
        blocked, halted = row.get("blocked", 0), row.get("halted", 0)
        series["labels"].append(bucket.strftime("%m-%d %H:00" if hourly else "%Y-%m-%d"))
        series["total"].append(total)
        series["passed"].append(total - blocked - halted)
        series["blocked"].append(blocked)
        series["halted"].append(halted)
        series["flagged"].append(row.get("flagged", 0))
        series["block_rate"].append(_rate(blocked, total))
        series["halt_rate"].append(_rate(halted, total))
        for key in ("p50", "p95", "ft50", "ft95"):
            value = row.get(key)
            series[key].append(round(value, 1) if value is not None else None)

    categories = list(
        turns.exclude(flag_reason="")
        .values("input_category")
        .annotate(n=Count("id"))
        .order_by("-n", "input_category")[:20]
    )

    decided = ReviewItem.objects.filter(
        status=ReviewStatus.DECIDED, decided_at__gte=start, decided_at__lt=end
    )
    if constitution is not None:
        decided = decided.filter(conversation__constitution=constitution)
    decisions = {d: 0 for d in Decision.values}
    for row in decided.values("decision").annotate(n=Count("id")):
        decisions[row["decision"]] = row["n"]
    reviewed = sum(decisions.values())

    shadowed = turns.filter(shadow__has_key="would_block")
    shadow = shadowed.aggregate(
        total=Count("id"),
        shadow_blocks=Count("id", filter=Q(shadow__would_block=True)),
        active_blocks=Count("id", filter=_blocks()),
        agree=Count(
            "id",
            filter=(_blocks() & Q(shadow__would_block=True))
            | (~_blocks() & Q(shadow__would_block=False)),
        ),
    )
    shadow["agreement"] = _rate(shadow["agree"], shadow["total"])

    return {
        "start": start,
        "end": end,
        "hourly": hourly,
        "totals": totals,
        "series": series,
        "categories": categories,
        "review": {
            "decisions": decisions,
            "reviewed": reviewed,
            "false_positive_rate": _rate(decisions[Decision.FALSE_POSITIVE], reviewed),
        },
        "queue": queue_state(constitution),
        "shadow": shadow,
    }


def queue_state(constitution: Any = None) -> dict[str, Any]:
    items = ReviewItem.objects.exclude(status=ReviewStatus.DECIDED)
    if constitution is not None:
        items = items.filter(conversation__constitution=constitution)
    state = items.aggregate(
        open=Count("id", filter=Q(status=ReviewStatus.OPEN)),
        claimed=Count("id", filter=Q(status=ReviewStatus.CLAIMED)),
        oldest=Min("created_at"),
    )
    state["size"] = state["open"] + state["claimed"]
    state["oldest_age"] = timezone.now() - state["oldest"] if state["oldest"] else None
    return state


def live_counters() -> dict[str, Any]:
    """The small live block (last 24 hours, all constitutions), pushed over the socket."""
    now = timezone.now()
    counts = guarded_turns(now - RANGES["24h"], now + timedelta(minutes=1)).aggregate(
        total=Count("id"),
        blocked=Count("id", filter=Q(finish_reason="blocked")),
        halted=Count("id", filter=Q(finish_reason="halted")),
        flagged=Count("id", filter=~Q(flag_reason="")),
    )
    counts["decided"] = ReviewItem.objects.filter(
        status=ReviewStatus.DECIDED, decided_at__gte=now - RANGES["24h"]
    ).count()
    counts["queue"] = queue_state()
    counts["at"] = now
    return counts


DASHBOARD_GROUP = "dashboard"


PUSH_EVERY_SECONDS = 1.0  # live dashboard counters: at most one push per second


_push_lock = threading.Lock()


_last_push = 0.0


_push_pending = False


def push_dashboard() -> None:
    """Send the live counters to /ws/dashboard/ at most once per PUSH_EVERY_SECONDS;
    a call inside the quiet period schedules one trailing push, so the last change
    always shows."""
    global _last_push, _push_pending
    with _push_lock:
        if _push_pending:
            return
        wait = PUSH_EVERY_SECONDS - (time.monotonic() - _last_push)
        if wait > 0:
            _push_pending = True
            timer = threading.Timer(wait, _trailing_push)
            timer.daemon = True
            timer.start()
            return
        _last_push = time.monotonic()
    send_counters()


def _trailing_push() -> None:
    global _last_push, _push_pending
    with _push_lock:
        _push_pending = False
        _last_push = time.monotonic()
    try:
        send_counters()
    finally:
        connections.close_all()  # this thread's own connections only


def send_counters() -> None:
    try:
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer
        from django.template.loader import render_to_string


        layer = get_channel_layer()
        if layer is None:
            return
        html = render_to_string(
            "classifiers/dashboard/_live.html", {"live": live_counters(), "oob": True}
        )
        async_to_sync(layer.group_send)(DASHBOARD_GROUP, {"type": "dashboard.update", "html": html})
    except Exception:  # a Redis hiccup must not break a guard request or a decision
        logger.warning("could not push dashboard counters", exc_info=True)
