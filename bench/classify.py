"""Classify API throughput: `python -m bench classify [--seconds N] --json OUT`.

Serves the app's ASGI application under uvicorn in this process on a loopback
port, then runs 32 concurrent httpx clients against POST /api/v1/classify for N
seconds with dynamic batching ON and then OFF (the module flag
`classifiers.api.batching.ENABLED`; production reads GUARDWEB_CLASSIFY_BATCHING),
each after a short warm-up. Reports throughput (req/s), p50/p95 latency and the
mean batch size, and the ON/OFF ratios.

The model: `--constitution SLUG` uses that constitution's active input classifier
(e.g. the one `make demo` trains). Without it the bench uses its own constitution
"bench-classify", training a small input classifier (the real MiniLM, fast mode,
seconds) into the data dir the first time. Its rate limit is set to unlimited.
Every request is stored as a conversation, as in production; the bench deletes
its own conversations and revokes its token when done.

`--url URL` targets a running server instead (same database); the batching mode
is then the server's, so only one mode is measured. `--scratch-db` runs against a
throwaway, freshly migrated database (created and dropped by the bench) instead
of the configured one.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import socket
import statistics
import threading
import time
from typing import Any

import httpx

logger = logging.getLogger(__name__)

BENCH_SLUG = "bench-classify"
CLIENTS = 32


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardweb.settings")
    import django

    django.setup()


def _bench_constitution() -> Any:
    """The bench's own constitution with an active input classifier (trained once)."""
    from django.db import transaction

    from bench import fixtures
    from classifiers.models import ActiveModel, GuardPolicy
    from constitutions.models import Constitution

    constitution = Constitution.objects.filter(slug=BENCH_SLUG).first()
    if constitution is None:
        with transaction.atomic():
            version = fixtures.placeholder_constitution(BENCH_SLUG)
        constitution = version.constitution
    if not ActiveModel.objects.filter(constitution=constitution, kind="input").exists():
        logger.info("training the bench's input classifier (once)")
        relative = f"{BENCH_SLUG}/input-{int(time.time())}"
        artifact = fixtures.train_input_artifact(relative)
        fixtures.activate(
            constitution.versions.order_by("-number").first(), "input", artifact
        )
    GuardPolicy.objects.update_or_create(
        constitution=constitution, defaults={"requests_per_minute": 0}
    )
    return constitution


def serve_app() -> tuple[str, Any]:
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
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


async def _load(
    url: str, raw: str, slug: str, seconds: float, prompts: list[str]
) -> dict[str, Any]:
    """CLIENTS concurrent clients, each sending one request after another."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {raw}"}
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)

    async def client_loop(client: httpx.AsyncClient, offset: int) -> None:
        nonlocal errors
        for prompt in itertools.islice(itertools.cycle(prompts), offset, None):
            if time.perf_counter() >= stop_at:
                return
            started = time.perf_counter()
            response = await client.post(
                f"{url}/api/v1/classify", json={"text": prompt, "constitution": slug},
                headers=headers,
            )  # fmt: skip
            if response.status_code == 200:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                errors += 1
                if errors <= 3:
                    logger.warning(
                        "HTTP %s: %s", response.status_code, response.text[:200]
                    )

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(client_loop(client, i) for i in range(CLIENTS)))
    elapsed = time.perf_counter() - began
    latencies.sort()

    def percentile(q: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)

    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
    }


def _single(url: str, raw: str, slug: str, n: int, prompts: list[str]) -> dict[str, Any]:
    """One client, one request after another: the latency a lone caller sees."""
    headers = {"Authorization": f"Bearer {raw}"}
    latencies = []
    with httpx.Client(timeout=60) as client:
        for i in range(n + 5):
            started = time.perf_counter()
            client.post(f"{url}/api/v1/classify", json={"text": prompts[i % len(prompts)],
                        "constitution": slug}, headers=headers).raise_for_status()  # fmt: skip
            if i >= 5:  # the first few warm up connections and caches
                latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return {
        "requests": n,
        "p50_ms": round(latencies[len(latencies) // 2], 1),
        "p95_ms": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench classify")
    parser.add_argument("--seconds", type=float, default=10.0, help="load per mode")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="unmeasured load first"
    )
    parser.add_argument("--single", type=int, default=50,
                        help="then this many requests from ONE client, one after another "
                        "(the latency a lone caller sees; 0 skips it)")  # fmt: skip
    parser.add_argument("--constitution", help="slug with an active input classifier")
    parser.add_argument("--url", help="a running server (measures its mode only)")
    parser.add_argument("--scratch-db", action="store_true",
                        help="use a throwaway database, dropped at the end")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    setup_django()
    return run_in_database(_run, args)


def run_in_database(run: Any, args: argparse.Namespace) -> Any:
    """`run(args)` against the configured database, or with `args.scratch_db` a
    throwaway, freshly migrated one (created and dropped here)."""
    if not args.scratch_db:
        return run(args)
    from django.db import connection

    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        return run(args)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def _run(args: argparse.Namespace) -> dict[str, Any]:

    from django.contrib.auth import get_user_model

    from bench.fixtures import BENIGN, HARMFUL
    from classifiers.api import batching
    from classifiers.models import ApiToken, Conversation
    from constitutions.models import Constitution

    constitution = (
        Constitution.objects.get(slug=args.constitution) if args.constitution
        else _bench_constitution()
    )  # fmt: skip
    # API tokens act for their user, who needs a role (a viewer is enough).
    from django.contrib.auth.models import Group

    user, _ = get_user_model().objects.get_or_create(username="bench-classify")
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    token, raw = ApiToken.issue(user=user, name="bench", constitution=constitution)
    prompts = [p for pair in zip(HARMFUL, BENIGN, strict=True) for p in pair]
    url, server = (args.url, None) if args.url else serve_app()
    modes: dict[str, Any] = {}
    try:
        settings = (
            [("server", None)]
            if args.url
            else [("batching_on", True), ("batching_off", False)]
        )
        for name, enabled in settings:
            batching.ENABLED = enabled
            asyncio.run(_load(url, raw, constitution.slug, args.warmup, prompts))
            calls_before = sum(b.calls for b in batching._batchers.values())
            requests_before = sum(b.requests for b in batching._batchers.values())
            result = asyncio.run(
                _load(url, raw, constitution.slug, args.seconds, prompts)
            )
            calls = sum(b.calls for b in batching._batchers.values()) - calls_before
            served = (
                sum(b.requests for b in batching._batchers.values()) - requests_before
            )
            result["engine_calls"] = calls if enabled else result["requests"]
            result["mean_batch"] = (
                round(served / calls, 2) if enabled and calls else 1.0
            )
            modes[name] = result
            logger.info("%s: %s", name, result)
        if args.single:
            modes["single_client"] = _single(url, raw, constitution.slug, args.single, prompts)
            logger.info("single client: %s", modes["single_client"])
    finally:
        batching.ENABLED = None
        if server is not None:
            server.should_exit = True
        Conversation.objects.filter(api_token=token).delete()
        token.delete()
    report: dict[str, Any] = {
        "benchmark": "classify",
        "constitution": constitution.slug,
        "clients": CLIENTS,
        "seconds_per_mode": args.seconds,
        "max_batch": batching.MAX_BATCH,
        "max_wait_ms": batching.MAX_WAIT_S * 1000,
        "cpu_count": os.cpu_count(),
        "modes": modes,
    }
    on, off = modes.get("batching_on"), modes.get("batching_off")
    if on and off and off["throughput_rps"] and off["p50_ms"]:
        report["throughput_ratio_on_off"] = round(
            on["throughput_rps"] / off["throughput_rps"], 2
        )
        report["p50_ratio_on_off"] = round(on["p50_ms"] / off["p50_ms"], 2)
    return report
