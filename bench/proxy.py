"""The guarded proxy against a fast upstream: `python -m bench proxy [--rate 100]`.

A paced OpenAI-compatible upstream on loopback streams a fixed reply of `--tokens`
word-tokens at `--rate` tokens/s (no model: the upstream's own speed is the
baseline). The same request is made directly to the upstream and through Guardweb
(`/v1/chat/completions`, model `bench-proxy/paced`: the input classifier first, then
the output classifier, a probe on the real SmolLM2, scoring every token before it
is forwarded), one stream at a time and `--concurrent` streams at once. Reports:

- delivered tokens/s through the guard vs direct (the #25 target: >= 0.9);
- added time to first token vs direct, beside the input classifier's own latency
  (`/api/v1/classify` on the same prompt; target: added <= that + 50 ms).

The bench's constitution ("bench-proxy") gets a small input classifier (trained
once into the data dir) and an output probe that never halts, so every token is
scored and forwarded. `--scratch-db` uses a throwaway database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from bench.classify import run_in_database, serve_app, setup_django

logger = logging.getLogger(__name__)
SLUG = "bench-proxy"
PROMPT = "How do I keep tomato plants healthy through a dry summer?"
WORDS = ("the soil stays moist when you water early and mulch well so roots grow deep "
         "and strong through summer heat").split()  # fmt: skip


def _paced_upstream(rate: float, tokens: int) -> tuple[str, ThreadingHTTPServer]:
    """An SSE chat-completions server that streams `tokens` words at `rate`/s."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            return

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            start = time.perf_counter()
            try:
                for i in range(tokens):
                    # Paced against the clock, not by sleeping a fixed step, so the
                    # rate holds however long each write takes.
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    word = ("" if i == 0 else " ") + WORDS[i % len(WORDS)]
                    chunk = {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1", server


async def _one_stream(url: str, headers: dict[str, str], body: dict[str, Any]) -> dict[str, float]:
    started = time.perf_counter()
    first = None
    text = ""
    async with httpx.AsyncClient(timeout=120) as client:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content") or ""
                    if content and first is None:
                        first = time.perf_counter()
                    text += content
    ended = time.perf_counter()
    words = len(text.split())
    # Delivery rate once the reply flows: tokens after the first over the time from
    # the first to the end (the wait for the first token is reported on its own).
    flowing = ended - (first or started)
    return {"ttft_ms": ((first or ended) - started) * 1000, "seconds": ended - started,
            "words": words, "tokens_per_s": (words - 1) / flowing if flowing > 0 else 0.0}  # fmt: skip


async def _streams(url: str, headers: dict[str, str], body: dict[str, Any], n: int) -> list[dict[str, float]]:
    return list(await asyncio.gather(*(_one_stream(url, headers, body) for _ in range(n))))


def _summary(runs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "ttft_ms_p50": round(statistics.median(r["ttft_ms"] for r in runs), 1),
        "tokens_per_s_mean": round(statistics.fmean(r["tokens_per_s"] for r in runs), 1),
        "words_per_stream": statistics.median(r["words"] for r in runs),
    }


def _setup(upstream_url: str) -> tuple[Any, str]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db import transaction

    from bench import fixtures
    from classifiers.models import ActiveModel, ApiToken, GuardPolicy, Upstream
    from constitutions.models import Constitution

    constitution = Constitution.objects.filter(slug=SLUG).first()
    if constitution is None:
        with transaction.atomic():
            constitution = fixtures.placeholder_constitution(SLUG).constitution
    version = constitution.versions.order_by("-number").first()
    if not ActiveModel.objects.filter(constitution=constitution, kind="input").exists():
        fixtures.activate(version, "input", fixtures.train_input_artifact(f"{SLUG}/input-{int(time.time())}"))
    if not ActiveModel.objects.filter(constitution=constitution, kind="output").exists():
        fixtures.activate(version, "output", fixtures.output_artifact(None))
    policy, _ = GuardPolicy.objects.update_or_create(
        constitution=constitution, defaults={"requests_per_minute": 0, "guard_timeout_s": 30}
    )
    Upstream.objects.filter(name="paced").delete()
    upstream = Upstream.objects.create(name="paced", base_url=upstream_url, model="paced",
                                       timeout_s=30, max_concurrency=64, max_tokens=4096)  # fmt: skip
    policy.upstreams.add(upstream)
    user, _ = get_user_model().objects.get_or_create(username="bench-proxy")
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    token, raw = ApiToken.issue(user=user, name="bench", constitution=constitution)
    return token, raw


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench proxy")
    parser.add_argument("--rate", type=float, default=100.0, help="upstream tokens/s")
    parser.add_argument("--tokens", type=int, default=300, help="tokens per reply")
    parser.add_argument("--repeats", type=int, default=3, help="single streams per side")
    parser.add_argument("--concurrent", type=int, default=4, help="streams at once")
    parser.add_argument("--scratch-db", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    setup_django()
    return run_in_database(_run, args)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from classifiers.models import Conversation

    upstream_url, upstream = _paced_upstream(args.rate, args.tokens)
    token, raw = _setup(upstream_url)
    url, server = serve_app()
    guard_headers = {"Authorization": f"Bearer {raw}"}
    body = {"messages": [{"role": "user", "content": PROMPT}], "stream": True, "max_tokens": 4096}
    direct = (f"{upstream_url}/chat/completions", {}, {**body, "model": "paced"})
    guarded = (f"{url}/v1/chat/completions", guard_headers, {**body, "model": f"{SLUG}/paced"})
    try:
        asyncio.run(_streams(*guarded, 1))  # warm-up: models load, caches fill
        classify_ms = []
        for _ in range(10):
            started = time.perf_counter()
            httpx.post(f"{url}/api/v1/classify", json={"text": PROMPT}, headers=guard_headers,
                       timeout=60).raise_for_status()  # fmt: skip
            classify_ms.append((time.perf_counter() - started) * 1000)
        result: dict[str, Any] = {"benchmark": "proxy", "rate": args.rate, "tokens": args.tokens,
                                  "cpu_count": os.cpu_count(),
                                  "classify_p50_ms": round(statistics.median(classify_ms), 1)}  # fmt: skip
        for label, n, repeats in (("single", 1, args.repeats), ("concurrent", args.concurrent, 1)):
            d = [r for _ in range(repeats) for r in asyncio.run(_streams(*direct, n))]
            g = [r for _ in range(repeats) for r in asyncio.run(_streams(*guarded, n))]
            sd, sg = _summary(d), _summary(g)
            result[label] = {
                "streams": n, "direct": sd, "guarded": sg,
                "tokens_per_s_ratio": round(sg["tokens_per_s_mean"] / sd["tokens_per_s_mean"], 3),
                "added_ttft_ms": round(sg["ttft_ms_p50"] - sd["ttft_ms_p50"], 1),
            }  # fmt: skip
            logger.info("%s: %s", label, result[label])
        single = result["single"]
        result["added_ttft_minus_classify_ms"] = round(single["added_ttft_ms"] - result["classify_p50_ms"], 1)
        return result
    finally:
        server.should_exit = True
        upstream.shutdown()
        Conversation.objects.filter(api_token=token).delete()
        token.delete()
