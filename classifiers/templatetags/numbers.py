"""Number formatting for reports."""

from __future__ import annotations

from typing import Any

from django import template

from classifiers.ml.eval.intervals import format_rate

register = template.Library()


@register.filter
def pct(value: Any, digits: int = 1) -> str:
    """0.0537 -> "5.4%"; blank for a missing value."""
    if value is None or value == "":
        return ""
    try:
        return f"{float(value) * 100:.{int(digits)}f}%"
    except (TypeError, ValueError):
        return ""


@register.filter
def seconds(value: Any) -> str:
    """A timedelta as "6 s", "4 min 12 s" or "1 h 03 min"; blank for None."""
    if value is None:
        return ""
    total = int(value.total_seconds() if hasattr(value, "total_seconds") else float(value))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60} s"
    return f"{total // 3600} h {total % 3600 // 60:02d} min"


@register.filter
def interval(value: Any, digits: int = 2) -> str:
    """[0.8012, 0.9876] -> "0.80–0.99" (a 95% interval); blank when missing."""
    try:
        low, high = value
        return f"{float(low):.{int(digits)}f}–{float(high):.{int(digits)}f}"
    except (TypeError, ValueError):
        return ""


@register.filter
def rate_of(summary: Any) -> str:
    """{"rate", "low", "high", "n"} -> "0.912 [0.88–0.94] of 450"; "–" when missing."""
    return format_rate(summary)
