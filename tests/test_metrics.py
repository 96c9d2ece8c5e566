"""/metrics: login-free Prometheus text format with the guard and review counters."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from classifiers.review import services as review
from tests.factories import SHOP_AND_GARDEN, published_constitution
from tests.review_helpers import flagged_conversation

pytestmark = pytest.mark.django_db

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (-?[0-9.eE+-]+|\+Inf|NaN)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample line, strictly: a line that is neither a comment nor a sample fails."""
    samples = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not a valid sample line: {line!r}"
        labels = frozenset(LABEL.findall(match.group(3) or ""))
        samples[(match.group(1), labels)] = float(match.group(4))
    assert types["guardweb_guard_latency_seconds"] == "histogram"
    assert types["guardweb_conversations_total"] == "counter"
    return samples


def test_metrics_are_public_parse_and_count_what_happened(client, bob):  # type: ignore[no-untyped-def]
    constitution = published_constitution(categories=SHOP_AND_GARDEN).constitution
    blocked = flagged_conversation(constitution, prompt="SECRET-PROMPT forbidden widget",
                                   latency_ms=30.0, first_token_ms=None)  # fmt: skip
    flagged_conversation(constitution, finish_reason="halted", reason="output_halted",
                         source="api", latency_ms=700.0, first_token_ms=80.0)  # fmt: skip
    flagged_conversation(constitution, finish_reason="stop", flagged=False, latency_ms=3000.0,
                         first_token_ms=120.0)  # fmt: skip
    review.decide(item_id=blocked.review_item.pk, user=bob, decision="false_positive", version=0)
    # Two of the guarded turns were scored by a probe cascade; one escalated.
    from classifiers.models import Turn

    turns = list(Turn.objects.filter(variant="guarded").order_by("pk"))
    Turn.objects.filter(pk=turns[1].pk).update(cascaded=True, escalated_at=3)
    Turn.objects.filter(pk=turns[2].pk).update(cascaded=True)

    response = client.get(reverse("metrics"))  # not logged in
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    assert "SECRET-PROMPT" not in text and "bob" not in text
    samples = parse(text)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert value("guardweb_conversations_total", source="playground", constitution="widgets", decision="blocked") == 1
    assert value("guardweb_conversations_total", source="api", constitution="widgets", decision="halted") == 1
    assert value("guardweb_conversations_total", source="playground", constitution="widgets", decision="passed") == 1
    assert value("guardweb_flagged_conversations_total", reason="input_blocked") == 1
    assert value("guardweb_flagged_conversations_total", reason="output_halted") == 1
    assert value("guardweb_review_decisions_total", decision="false_positive") == 1
    assert value("guardweb_review_queue_size", status="open") == 1
    assert value("guardweb_turns_total", source="api", finish_reason="halted") == 1
    assert value("guardweb_cascade_turns_total", escalated="yes") == 1
    assert value("guardweb_cascade_turns_total", escalated="no") == 1
    # Histograms are cumulative: 30 ms, 700 ms, 3 s.
    assert value("guardweb_guard_latency_seconds_bucket", le="0.05") == 1
    assert value("guardweb_guard_latency_seconds_bucket", le="1.0") == 2
    assert value("guardweb_guard_latency_seconds_bucket", le="5.0") == 3
    assert value("guardweb_guard_latency_seconds_bucket", le="+Inf") == 3
    assert value("guardweb_guard_latency_seconds_count") == 3
    assert value("guardweb_guard_latency_seconds_sum") == pytest.approx(3.73)
    assert value("guardweb_first_token_latency_seconds_count") == 2  # one had none
    assert value("guardweb_first_token_latency_seconds_bucket", le="0.1") == 1


def test_metrics_of_an_empty_database_still_parse(client):  # type: ignore[no-untyped-def]
    samples = parse(client.get(reverse("metrics")).content.decode())
    assert samples[("guardweb_guard_latency_seconds_count", frozenset())] == 0
    assert samples[("guardweb_review_queue_size", frozenset({("status", "open")}))] == 0


def test_metrics_can_be_restricted_by_token_and_address(client, settings):  # type: ignore[no-untyped-def]
    """#26 item 9: an operator endpoint, closed with a bearer token and/or an allow-list."""
    import ipaddress

    settings.METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer é").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200
    settings.METRICS_ALLOW = [ipaddress.ip_network("10.0.0.0/8")]
    # The test client's address is 127.0.0.1: outside the list, whatever the token.
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 403
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret", REMOTE_ADDR="10.1.2.3")
    assert ok.status_code == 200 and "guardweb_conversations_total" in ok.content.decode()


def test_batching_counters_of_every_web_process_are_reported(client, settings):  # type: ignore[no-untyped-def]
    """#26 item 10: with several web processes a scrape reaches one of them; each
    process's counters are in Redis, so every scrape reports all of them."""
    import json
    import time

    from classifiers.guard import batch_counters

    redis = batch_counters._redis()
    key = batch_counters._key()
    redis.delete(key)
    other = {"steps": 40, "rows": 100, "max": 4, "updated": time.time()}
    redis.hset(key, "web-2:4242|tiny-lm", json.dumps(other))
    gone = {**other, "updated": time.time() - batch_counters.STALE_S - 10}
    redis.hset(key, "web-3:99|tiny-lm", json.dumps(gone))

    class Stats:
        steps, row_steps, max_batch = 10, 25, 3

    batch_counters.publish("tiny-lm", Stats())  # this process, as its batcher would
    samples = parse(client.get("/metrics").content.decode())
    here = batch_counters.process_label()
    steps = {dict(labels)["process"]: v for (name, labels), v in samples.items()
             if name == "guardweb_generation_batch_steps_total" and dict(labels)["model"] == "tiny-lm"}  # fmt: skip
    assert steps == {"web-2:4242": 40, here: 10}  # the stale process is dropped
    assert sum(steps.values()) == 50
    assert not redis.hexists(key, "web-3:99|tiny-lm")
    redis.delete(key)
