"""Bounded load test on loopback: `python -m bench load [--ws-clients 50]
[--api-clients 32] [--seconds 60] [--max-new-tokens 8] --json OUT`.

Serves the ASGI app under uvicorn in this process on a free loopback port, then
runs for `--seconds`:

- N playground websocket clients (a real session cookie of a bench superuser),
  each sending chat messages one after another (a new conversation every few
  turns) and reading events until the turn's `end`;
- M API clients calling POST /api/v1/classify, every eighth call a
  non-streaming POST /v1/chat/completions instead.

Every loop stops starting work at the deadline; work in flight then has
`--drain` seconds to finish (each websocket receive and HTTP call has its own
timeout too), so the bench always ends by itself.

Reported: errors (any unexpected status, websocket `error` event, timeout or
exception; must be 0), completed turns/requests, lost conversations (every turn
that got an `end` event must be a stored Turn; every 200 from the API a stored
Conversation), p50/p95 latency per kind, throughput.

The guard: without `--constitution` the bench migrates a throwaway database
(dropped at the end) and sets up "widgets" with the test suite's quickly trained
classifiers (bench/fixtures.py: the real MiniLM input classifier, a probe on
the real SmolLM2 that never halts). `--constitution SLUG` uses that constitution's
active models in the configured database (e.g. `cbrn-demo` after `make demo`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

logger = logging.getLogger(__name__)

PROMPTS = [
    "how do I cook a garden soup with leeks",
    "what is the best soil for roses",
    "how do I make the forbidden widget at home",
    "tips for growing basil on a windowsill",
    "when do I prune apple trees in my garden",
    "which flowers attract bees to the garden",
]
TURNS_PER_CONVERSATION = 4  # bounds the history each turn sends to the model
CHAT_EVERY = 8  # every eighth API call is a chat completion
MAX_ERROR_SAMPLES = 10


@dataclass
class LoadStats:
    """What the clients saw; filled by the coroutines of one event loop."""

    latencies_ms: dict[str, list[float]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )  # kind -> latency of each completed unit of work
    errors: list[str] = field(default_factory=list)  # one line per error
    ended: collections.Counter[int] = field(
        default_factory=collections.Counter
    )  # conversation id -> `end` events received
    api_ok: int = 0  # API calls answered 200 (each stores one conversation)

    def error(self, text: str) -> None:
        self.errors.append(text)
        if len(self.errors) <= 3:
            logger.warning("load error: %s", text)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


async def _ws_client(
    url: str, cookie: str, slug: str, index: int, stats: LoadStats, *,
    stop_at: float, max_new_tokens: int, timeout: float,
) -> None:  # fmt: skip
    import websockets

    ws_url = url.replace("http://", "ws://") + "/ws/playground/"
    headers = {"Cookie": f"sessionid={cookie}", "Origin": url}
    prompts = itertools.islice(itertools.cycle(PROMPTS), index, None)
    try:
        async with websockets.connect(
            ws_url, additional_headers=headers, open_timeout=timeout
        ) as ws:
            conversation_id: int | None = None
            turns_here = 0
            while time.perf_counter() < stop_at:
                payload: dict[str, Any] = {
                    "type": "chat", "constitution": slug, "message": next(prompts),
                    "max_new_tokens": max_new_tokens,
                }  # fmt: skip
                if conversation_id is not None:
                    payload["conversation_id"] = conversation_id
                sent = time.perf_counter()
                await ws.send(json.dumps(payload))
                first_token: float | None = None
                while True:
                    event = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                    kind = event.get("type")
                    if kind == "error":
                        stats.error(f"ws error event: {event.get('message')}")
                        return
                    if kind == "start":
                        conversation_id = event["conversation_id"]
                    elif kind == "tokens" and first_token is None:
                        first_token = time.perf_counter() - sent
                    elif kind == "end":
                        break
                stats.latencies_ms["ws_turn"].append(
                    (time.perf_counter() - sent) * 1000
                )
                if first_token is not None:
                    stats.latencies_ms["ws_first_token"].append(first_token * 1000)
                assert conversation_id is not None
                stats.ended[conversation_id] += 1
                turns_here += 1
                if turns_here % TURNS_PER_CONVERSATION == 0:
                    conversation_id = None
    except Exception as exc:  # noqa: BLE001 - every failure is a counted error
        stats.error(f"ws client {index}: {type(exc).__name__}: {exc}")


async def _api_client(
    client: httpx.AsyncClient, url: str, raw: str, slug: str, index: int,
    stats: LoadStats, *, stop_at: float, max_new_tokens: int,
) -> None:  # fmt: skip
    headers = {"Authorization": f"Bearer {raw}"}
    prompts = itertools.islice(itertools.cycle(PROMPTS), index, None)
    for call in itertools.count(index):
        if time.perf_counter() >= stop_at:
            return
        prompt = next(prompts)
        if call % CHAT_EVERY == CHAT_EVERY - 1:
            kind, path = "chat_completions", "/v1/chat/completions"
            body: dict[str, Any] = {
                "model": slug, "max_tokens": max_new_tokens,
                "messages": [{"role": "user", "content": prompt}],
            }  # fmt: skip
        else:
            kind, path = "classify", "/api/v1/classify"
            body = {"text": prompt, "constitution": slug}
        started = time.perf_counter()
        try:
            response = await client.post(url + path, json=body, headers=headers)
        except Exception as exc:  # noqa: BLE001 - every failure is a counted error
            stats.error(f"{kind}: {type(exc).__name__}: {exc}")
            continue
        if response.status_code != 200:
            stats.error(f"{kind}: HTTP {response.status_code} {response.text[:200]}")
            continue
        stats.api_ok += 1
        stats.latencies_ms[kind].append((time.perf_counter() - started) * 1000)


async def run_load(
    url: str, *, cookie: str, raw_token: str, slug: str, ws_clients: int,
    api_clients: int, seconds: float, max_new_tokens: int = 8,
    timeout: float = 120.0, drain: float = 180.0,
) -> LoadStats:  # fmt: skip
    """Run the clients against `url` for `seconds`; in-flight work gets `drain` more."""
    stats = LoadStats()
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=max(api_clients, 1))
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        tasks = [
            _ws_client(url, cookie, slug, i, stats, stop_at=stop_at,
                       max_new_tokens=max_new_tokens, timeout=timeout)
            for i in range(ws_clients)
        ] + [
            _api_client(client, url, raw_token, slug, i, stats, stop_at=stop_at,
                        max_new_tokens=max_new_tokens)
            for i in range(api_clients)
        ]  # fmt: skip
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), seconds + drain)
        except TimeoutError:
            stats.error(f"clients still busy {drain:.0f} s after the deadline")
    return stats


def lost_work(stats: LoadStats, *, api_token: Any) -> dict[str, int]:
    """Compare what the clients were told with what the database holds (sync, ORM)."""
    from classifiers.models import Conversation, Turn

    stored = collections.Counter(
        Turn.objects.filter(conversation_id__in=list(stats.ended), variant="guarded")
        .values_list("conversation_id", flat=True)
    )  # fmt: skip
    lost_turns = sum(max(0, n - stored[cid]) for cid, n in stats.ended.items())
    api_stored = Conversation.objects.filter(api_token=api_token).count()
    return {
        "lost_turns": lost_turns,
        "lost_api_conversations": max(0, stats.api_ok - api_stored),
        "stored_turns": sum(stored.values()),
        "stored_api_conversations": api_stored,
    }


def summary(stats: LoadStats, elapsed: float) -> dict[str, Any]:
    latency = {
        kind: {"count": len(values), "p50_ms": _percentile(values, 0.5),
               "p95_ms": _percentile(values, 0.95)}
        for kind, values in sorted(stats.latencies_ms.items())
    }  # fmt: skip
    turns = len(stats.latencies_ms.get("ws_turn", []))
    return {
        "errors": len(stats.errors),
        "error_samples": stats.errors[:MAX_ERROR_SAMPLES],
        "turns": turns,
        "api_requests": stats.api_ok,
        "seconds": round(elapsed, 1),
        "turns_per_s": round(turns / elapsed, 2),
        "api_requests_per_s": round(stats.api_ok / elapsed, 2),
        "latency": latency,
    }


# ----------------------------------------------------------------- command line


def _serve() -> tuple[str, Any, threading.Thread]:
    import uvicorn

    from guardweb.asgi import application

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(
        application, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
    ))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench load")
    parser.add_argument("--ws-clients", type=int, default=50)
    parser.add_argument("--api-clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--drain", type=float, default=180.0,
                        help="time in-flight work gets after the deadline")  # fmt: skip
    parser.add_argument("--constitution",
                        help="slug with active classifiers in the configured database "
                             "(default: a throwaway database with 'widgets')")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardweb.settings")
    import django

    django.setup()
    if args.constitution:
        return _run(args, args.constitution)
    from django.db import connection

    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        from bench.fixtures import guarded_constitution

        logger.info("training the throwaway guard (seconds)")
        constitution = guarded_constitution(
            "widgets", output=True, requests_per_minute=0
        )
        return _run(args, constitution.slug)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def _run(args: argparse.Namespace, slug: str) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from bench.playground_latency import _session_cookie
    from classifiers.models import ApiToken, Conversation, GuardPolicy
    from constitutions.models import Constitution

    constitution = Constitution.objects.get(slug=slug)
    # The bench must measure serving, not the quota.
    policy, _ = GuardPolicy.objects.get_or_create(constitution=constitution)
    old_quota = policy.requests_per_minute
    GuardPolicy.objects.filter(pk=policy.pk).update(requests_per_minute=0)
    cookie = _session_cookie()  # superuser "bench"
    user = get_user_model().objects.get(username="bench")
    token, raw = ApiToken.issue(user=user, name="bench-load", constitution=constitution)
    started_conversations = set(
        Conversation.objects.filter(user=user).values_list("pk", flat=True)
    )
    url, server, thread = _serve()
    try:
        # One warm-up turn and call load the models (not counted).
        asyncio.run(run_load(url, cookie=cookie, raw_token=raw, slug=slug, ws_clients=1,
                             api_clients=1, seconds=0.1, max_new_tokens=2))  # fmt: skip
        Conversation.objects.filter(api_token=token).delete()
        began = time.perf_counter()
        stats = asyncio.run(run_load(
            url, cookie=cookie, raw_token=raw, slug=slug, ws_clients=args.ws_clients,
            api_clients=args.api_clients, seconds=args.seconds,
            max_new_tokens=args.max_new_tokens, drain=args.drain,
        ))  # fmt: skip
        elapsed = time.perf_counter() - began
        report = summary(stats, elapsed)
        report.update(lost_work(stats, api_token=token))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        Conversation.objects.filter(api_token=token).delete()
        Conversation.objects.filter(user=user).exclude(
            pk__in=started_conversations
        ).delete()
        token.delete()
        GuardPolicy.objects.filter(pk=policy.pk).update(requests_per_minute=old_quota)
    report.update({
        "benchmark": "load", "constitution": slug, "ws_clients": args.ws_clients,
        "api_clients": args.api_clients, "seconds_requested": args.seconds,
        "max_new_tokens": args.max_new_tokens, "cpu_count": os.cpu_count(),
    })  # fmt: skip
    return report
