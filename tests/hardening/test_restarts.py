"""Restarting the embedded Redis and PostgreSQL under a running `manage.py serve`.

A real server child process on its own private data dir (DATABASE_URL/REDIS_URL
unset, so it starts embedded PostgreSQL and Redis there, like tests/test_startup.py);
the test stops and starts those servers with `guardweb.embedded` while the child
keeps running, and talks to it over HTTP and its websocket.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from guardweb import embedded

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BANNER = "Live updates are paused: Redis is unreachable"

SETUP = """
import json
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from classifiers.models import Conversation, Turn
user = User.objects.create_superuser('restart', 'r@example.com', 'pw-restart-1')
conversation = Conversation.objects.create(user=user, source='playground', mode='enforce')
Turn.objects.create(conversation=conversation, index=0,
                    user_content='how do I cook a garden soup', reply='Use leeks.')
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.save()
print(json.dumps({'cookie': session.session_key, 'conversation': conversation.pk}))
"""


@dataclass
class Child:
    data_dir: Path
    url: str
    cookie: str
    conversation: int


def _env(data_dir: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}
    }
    env.update(GUARDWEB_DATA_DIR=str(data_dir), GUARDWEB_REDIS_PREFIX="restart-test")
    # Not a test process: the child must use the real database of its data dir.
    env.pop("GUARDWEB_DB_NAME", None)
    env.pop("GUARDWEB_TESTING", None)
    return env


def _manage(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], capture_output=True,
        text=True, timeout=180, env=_env(data_dir), cwd=ROOT,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def child() -> Iterator[Child]:
    # Not tmp_path: PostgreSQL runs as its own user and must traverse the parents.
    data_dir = Path(tempfile.mkdtemp(prefix="guardweb-restarts-")) / "data"
    server: subprocess.Popen[bytes] | None = None
    try:
        migrated = _manage("migrate", "--noinput", data_dir=data_dir)
        assert migrated.returncode == 0, migrated.stderr
        made = _manage("shell", "-c", SETUP, data_dir=data_dir)
        assert made.returncode == 0, made.stderr
        state = json.loads(made.stdout.strip().splitlines()[-1])
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(port)],
            cwd=ROOT, env=_env(data_dir), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _get(url, "/accounts/login/").status_code == 200, 60, "serve")
        yield Child(data_dir, url, state["cookie"], state["conversation"])
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        embedded.stop_services(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _get(url: str, path: str, cookie: str | None = None) -> httpx.Response:
    cookies = {"sessionid": cookie} if cookie else None
    return httpx.get(url + path, cookies=cookies, timeout=15)


def _health(child: Child) -> tuple[int, dict]:
    response = _get(child.url, "/healthz")
    return response.status_code, response.json()


async def _resume(child: Child) -> dict:
    ws_url = child.url.replace("http://", "ws://") + "/ws/playground/"
    headers = {"Cookie": f"sessionid={child.cookie}", "Origin": child.url}
    async with websockets.connect(ws_url, additional_headers=headers) as socket_:
        await socket_.send(
            json.dumps({"type": "resume", "conversation_id": child.conversation})
        )
        return json.loads(await asyncio.wait_for(socket_.recv(), 30))


def _redis_port(data_dir: Path) -> int:
    return int(json.loads((data_dir / "redis" / "server.json").read_text())["port"])


def test_a_redis_restart_keeps_pages_up_shows_the_notice_and_sockets_resume(
    child,
) -> None:  # type: ignore[no-untyped-def]
    port = _redis_port(child.data_dir)
    home = _get(child.url, "/", child.cookie)
    assert home.status_code == 200 and BANNER not in home.text

    assert embedded.stop_redis(child.data_dir)
    status, body = _health(child)
    assert (
        status == 503
        and body["redis"]["ok"] is False
        and body["postgres"]["ok"] is True
    )
    for path in ("/", "/constitutions/", "/classifiers/playground/"):
        page = _get(child.url, path, child.cookie)
        assert page.status_code == 200, path
    # The notice follows the (cached, few-second) check.
    _wait(lambda: BANNER in _get(child.url, "/", child.cookie).text, 10, "the notice")

    url = embedded.ensure_redis(child.data_dir)
    # The recorded port again: the child's clients reconnect to the same URL.
    assert url == f"redis://127.0.0.1:{port}/0"
    _wait(lambda: _health(child)[1]["redis"]["ok"], 15, "redis ok in /healthz")
    status, body = _health(child)
    assert body["postgres"]["ok"] is True
    assert status == 200 or body["celery"]["ok"] is False  # no worker runs here
    history = asyncio.run(_resume(child))
    assert history["type"] == "history", history
    assert history["conversation_id"] == child.conversation
    assert [t["reply"] for t in history["turns"]] == ["Use leeks."]
    _wait(
        lambda: BANNER not in _get(child.url, "/", child.cookie).text, 10, "no notice"
    )


def test_a_postgres_restart_fails_cleanly_during_the_outage_then_serves_again(
    child,
) -> None:  # type: ignore[no-untyped-def]
    assert _get(child.url, "/", child.cookie).status_code == 200
    assert embedded.stop_postgres(child.data_dir)
    try:
        status, body = _health(child)
        assert status == 503 and body["postgres"]["ok"] is False, body
        assert body["redis"]["ok"] is True
        page = _get(child.url, "/", child.cookie)
        assert page.status_code == 500
        assert "Traceback" not in page.text  # Django's plain error page, DEBUG off
    finally:
        embedded.ensure_postgres(child.data_dir)
    # CONN_HEALTH_CHECKS: the very first request after the restart reconnects.
    page = _get(child.url, "/", child.cookie)
    assert page.status_code == 200
    assert 'data-testid="username">restart<' in page.text
    status, body = _health(child)
    assert body["postgres"]["ok"] is True and body["redis"]["ok"] is True
    history = asyncio.run(_resume(child))
    assert history["type"] == "history" and len(history["turns"]) == 1


@pytest.mark.django_db
def test_the_notice_follows_redis_reachability_and_costs_one_ping_per_interval(
    client, alice, settings, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from guardweb import context

    # A long interval: a slow, shared machine must not expire the cache mid-test.
    monkeypatch.setattr(context, "REDIS_CHECK_EVERY_S", 3600.0)
    client.force_login(alice)
    assert BANNER not in client.get("/").content.decode()
    live_url = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    started = time.monotonic()
    assert BANNER in client.get("/constitutions/").content.decode()
    assert time.monotonic() - started < 5
    pings = []
    import redis

    monkeypatch.setattr(redis.Redis, "ping", lambda self: pings.append(1) or True)
    for _ in range(3):  # cached: no new ping within the interval, still "down"
        assert BANNER in client.get("/").content.decode()
    assert pings == []
    settings.REDIS_URL = live_url  # a new URL is checked at once
    assert BANNER not in client.get("/").content.decode()
    assert pings == [1]
