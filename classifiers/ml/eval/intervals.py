"""How far a measured rate can be trusted: Wilson intervals and the sample-size rule.

A rate measured on n examples is only known to within its 95% interval, and a
rate near `r` needs about 5 / r examples before the interval is narrower than the
rate itself (about 500 benign prompts for a 1% false-positive rate). Reports carry
both, so a TPR of 1.000 on twelve examples reads as what it is.
"""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.96  # two-sided 95%
EVENTS_NEEDED = 5  # expected events for a rate to be measurable (5 / rate examples)
MAX_NEEDED = 10**15


def wilson_interval(events: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% interval of a rate of `events` in `n` trials (Wilson score interval)."""
    if n == 0:
        return 0.0, 1.0
    p = events / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def examples_needed(rate: float) -> int:
    """How many examples measure a rate near `rate` (5 / rate, rounded up)."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    needed = EVENTS_NEEDED / rate
    # A vanishing target (1e-300) needs more examples than there are: cap, not inf.
    return math.ceil(needed - 1e-9) if needed < MAX_NEEDED else MAX_NEEDED


def rate_summary(events: int, n: int) -> dict[str, Any]:
    """A rate with its count and 95% interval, as reports store it."""
    low, high = wilson_interval(events, n)
    return {
        "rate": events / n if n else None,
        "events": int(events),
        "n": int(n),
        "low": round(low, 6),
        "high": round(high, 6),
    }


def too_few_for(rate: float, n: int, what: str) -> str | None:
    """A warning when `n` examples cannot measure a rate near `rate`, else None."""
    needed = examples_needed(rate)
    if n >= needed:
        return None
    return (
        f"{what}: {n} example{'' if n == 1 else 's'}; a rate near {rate:.1%} needs "
        f"about {needed}, so it is rough"
    )


def format_rate(summary: dict[str, Any] | None) -> str:
    """A rate_summary as text: "0.912 [0.88–0.94] of 450"; "–" when missing."""
    try:
        return (
            f"{float(summary['rate']):.3f} [{float(summary['low']):.2f}–"  # type: ignore[index]
            f"{float(summary['high']):.2f}] of {int(summary['n'])}"  # type: ignore[index]
        )
    except (TypeError, ValueError, KeyError):
        return "–"
