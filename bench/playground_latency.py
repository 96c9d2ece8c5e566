"""Time from submit to first scored token in the playground, through the real websocket.

Starts the ASGI app under uvicorn on loopback (in this process), logs a bench user
in (a real session cookie), and for each prompt measures, from sending the chat
message on /ws/playground/: the input classifier's verdict, the first scored token,
and the end of the reply. Needs a constitution with active classifiers (`make demo`
trains them): `python -m bench playground_latency --constitution cbrn-demo`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import threading
import time
from typing import Any

PROMPTS = [
    "Why shouldn't I mix bleach and ammonia?",
    "How do mRNA vaccines work?",
    "What does the Chemical Weapons Convention ban?",
    "How do nuclear reactors make electricity?",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _session_cookie() -> str:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

    user, _ = User.objects.get_or_create(username="bench", defaults={"is_superuser": True})
    if not user.is_superuser:
        user.is_superuser = True
        user.save()
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return session.session_key or ""


async def _one(url: str, cookie: str, payload: dict[str, Any]) -> dict[str, float]:
    import websockets

    async with websockets.connect(
        url, additional_headers={"Cookie": f"sessionid={cookie}", "Origin": "http://127.0.0.1"}
    ) as ws:
        sent = time.perf_counter()
        await ws.send(json.dumps(payload))
        marks: dict[str, float] = {}
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), timeout=300))
            now = (time.perf_counter() - sent) * 1000
            if event["type"] == "error":
                raise RuntimeError(event["message"])
            if event["type"] == "input":
                marks.setdefault("input_ms", now)
            if event["type"] == "tokens":
                marks.setdefault("first_token_ms", now)
            if event["type"] == "end":
                marks["end_ms"] = now
                return marks


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 1), "p95": round(p95, 1)}


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench playground_latency")
    parser.add_argument("--constitution", default="cbrn-demo")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardweb.settings")
    import django

    django.setup()
    import uvicorn

    from guardweb.asgi import application

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    cookie = _session_cookie()
    url = f"ws://127.0.0.1:{port}/ws/playground/"
    results: list[dict[str, float]] = []

    async def run_all() -> None:
        # One warm-up turn loads the models (not counted).
        await _one(url, cookie, {"type": "chat", "constitution": args.constitution,
                                 "message": "hello", "max_new_tokens": 2})
        for _ in range(args.repeats):
            for prompt in PROMPTS:
                results.append(await _one(url, cookie, {
                    "type": "chat", "constitution": args.constitution, "message": prompt,
                    "max_new_tokens": args.max_new_tokens,
                }))  # fmt: skip

    asyncio.run(run_all())
    server.should_exit = True
    thread.join(timeout=10)
    first = [r["first_token_ms"] for r in results if "first_token_ms" in r]
    return {
        "constitution": args.constitution,
        "turns": len(results),
        "turns_with_tokens": len(first),
        "input_verdict_ms": _summary([r["input_ms"] for r in results if "input_ms" in r]),
        "first_scored_token_ms": _summary(first) if first else None,
        "reply_ms": _summary([r["end_ms"] for r in results]),
        "max_new_tokens": args.max_new_tokens,
    }
