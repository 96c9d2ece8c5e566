"""Dynamic batching of classify requests: fewer engine calls, the same answers."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from classifiers.api import batching
from classifiers.api.batching import Batcher
from classifiers.ml.serving.engine import InputDecision
from tests.api_helpers import BENIGN, HARMFUL

PROMPTS = HARMFUL[:8] + BENIGN[:8]


def fake_decision(text: str) -> InputDecision:
    score = len(text) / 100
    return InputDecision(score, "c", 1.0, 0.5, score >= 0.5, False)


def submit_concurrently(batcher: Batcher, texts: list[str]) -> list[InputDecision]:
    barrier = threading.Barrier(len(texts))
    results: list[InputDecision | None] = [None] * len(texts)

    def one(index: int) -> None:
        barrier.wait()
        future = batcher.submit([{"role": "user", "content": texts[index]}])
        results[index] = future.result(timeout=30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results  # type: ignore[return-value]


def test_concurrent_requests_share_engine_calls_and_keep_their_own_results():
    sizes: list[int] = []

    def classify(conversations):  # type: ignore[no-untyped-def]
        sizes.append(len(conversations))
        time.sleep(0.02)  # a model call takes a while; more requests queue meanwhile
        return [fake_decision(c[0]["content"]) for c in conversations]

    batcher = Batcher(classify, max_wait_s=0.05)
    try:
        texts = [f"prompt {'x' * i}" for i in range(16)]
        results = submit_concurrently(batcher, texts)
    finally:
        batcher.close()
    assert [r.score for r in results] == [fake_decision(t).score for t in texts]
    assert batcher.calls == len(sizes) < 16 and sum(sizes) == 16 == batcher.requests


def test_a_batch_never_exceeds_max_batch():
    sizes: list[int] = []

    def classify(conversations):  # type: ignore[no-untyped-def]
        sizes.append(len(conversations))
        return [fake_decision("x") for _ in conversations]

    batcher = Batcher(classify, max_batch=4, max_wait_s=0.2)
    try:
        futures = [
            batcher.submit([{"role": "user", "content": "x"}]) for _ in range(10)
        ]
        assert all(f.result(timeout=10).score == 0.01 for f in futures)
    finally:
        batcher.close()
    assert max(sizes) <= 4 and sum(sizes) == 10


def test_a_failing_engine_call_fails_every_request_in_the_batch():
    def classify(conversations):  # type: ignore[no-untyped-def]
        raise RuntimeError("model fell over")

    batcher = Batcher(classify, max_wait_s=0.05)
    try:
        futures = [batcher.submit([{"role": "user", "content": "x"}]) for _ in range(3)]
        for future in futures:
            with pytest.raises(RuntimeError, match="fell over"):
                future.result(timeout=10)
        # The thread survives: the next request is served.
        batcher.classify = lambda convs: [fake_decision("ok") for _ in convs]
        assert (
            batcher.submit([{"role": "user", "content": "x"}]).result(timeout=10).score
            == 0.02
        )
    finally:
        batcher.close()


def test_the_switch_reads_the_environment(monkeypatch):
    monkeypatch.setattr(batching, "ENABLED", None)
    monkeypatch.setenv("GUARDWEB_CLASSIFY_BATCHING", "0")
    assert batching.batching_enabled() is False
    monkeypatch.setenv("GUARDWEB_CLASSIFY_BATCHING", "1")
    assert batching.batching_enabled() is True
    monkeypatch.setattr(batching, "ENABLED", False)
    assert batching.batching_enabled() is False


def test_the_real_classifier_gives_the_same_scores_batched_and_alone():
    from django.conf import settings

    from classifiers.ml.eval.calibrate import Thresholds
    from classifiers.ml.input.persistence import load_input_classifier
    from classifiers.ml.serving.engine import InputGuard
    from tests.api_helpers import input_artifact

    artifact = input_artifact()
    loaded = load_input_classifier(settings.ARTIFACTS_DIR / artifact.path, device="cpu")
    guard = InputGuard(
        loaded.model, loaded.tokenizer, Thresholds.from_dict(artifact.thresholds)
    )
    alone = [
        guard.decide([[{"role": "user", "content": t}]], mode="enforce")[0]
        for t in PROMPTS
    ]
    calls: list[int] = []

    def classify(conversations):  # type: ignore[no-untyped-def]
        calls.append(len(conversations))
        return guard.decide(conversations, mode="enforce")

    batcher = Batcher(classify, max_wait_s=0.05)
    try:
        batched = submit_concurrently(batcher, PROMPTS)
    finally:
        batcher.close()
    assert len(calls) < len(PROMPTS)
    for one, other in zip(alone, batched, strict=True):
        assert other.score == pytest.approx(one.score, abs=1e-4)
        assert (other.category, other.blocked) == (one.category, one.blocked)
    assert sum(d.blocked for d in batched) == 8


@pytest.mark.usefixtures("live_db")
def test_sixteen_concurrent_api_requests_make_fewer_engine_calls(
    asgi_server, alice, monkeypatch
):
    from classifiers.models import ApiToken, Conversation
    from tests.api_helpers import guarded_constitution

    monkeypatch.setattr(batching, "ENABLED", True)
    constitution = guarded_constitution("batched", user=alice, requests_per_minute=100)
    raw = ApiToken.issue(user=alice, name="t", constitution=constitution)[1]
    headers = {"Authorization": f"Bearer {raw}"}
    url = f"{asgi_server}/api/v1/classify"

    async def fire(texts: list[str]) -> list[dict]:
        async with httpx.AsyncClient(timeout=60) as client:
            responses = await asyncio.gather(
                *(client.post(url, json={"text": t}, headers=headers) for t in texts)
            )
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        return [r.json() for r in responses]

    asyncio.run(fire(PROMPTS[:1]))  # loads the model and starts the batcher
    model_id = constitution.model_versions.get(kind="input").pk
    batcher = batching._batchers[model_id]
    calls_before = batcher.calls
    batched = asyncio.run(fire(PROMPTS))
    assert batcher.calls - calls_before < len(PROMPTS)
    monkeypatch.setattr(batching, "ENABLED", False)
    calls_before = batcher.calls
    alone = asyncio.run(fire(PROMPTS))
    assert batcher.calls == calls_before  # the batcher was bypassed
    for one, other in zip(alone, batched, strict=True):
        assert other["score"] == pytest.approx(one["score"], abs=1e-4)
        assert (other["blocked"], other["category"]) == (
            one["blocked"],
            one["category"],
        )
    assert Conversation.objects.filter(source="api").count() == 1 + 2 * len(PROMPTS)
