"""The report number filters (no database)."""

from __future__ import annotations

from datetime import timedelta

from classifiers.templatetags.numbers import pct, seconds


def test_pct():
    assert pct(0.0537) == "5.4%"
    assert pct(None) == "" and pct("x") == ""


def test_seconds_reads_as_a_duration():
    assert seconds(timedelta(seconds=6.4)) == "6 s"
    assert seconds(timedelta(minutes=4, seconds=12)) == "4 min 12 s"
    assert seconds(timedelta(hours=1, minutes=3)) == "1 h 03 min"
    assert seconds(None) == ""
