"""The continuous batchers' counters of every web process, in one Redis hash.

With `serve --workers N` each process has its own batcher, and a scrape of
/metrics reaches one process at random: its in-process counters alone jump from
one worker's values to another's. So each process writes its counters (at most
once a second while generating, and at each scrape) to a hash field named by host,
pid and model, and /metrics reports every process's series with a `process`
label: `sum by (model)` is right on every scrape (#26 item 10). Entries of
processes gone for a day are dropped.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import threading
import time
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)
STALE_S = 24 * 3600
_client: Any = None


def _redis() -> Any:
    global _client
    if _client is None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Counters are informative: one short try, never redis-py's retries.
        _client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
    return _client


def _key() -> str:
    return f"{settings.REDIS_PREFIX}:batching"


def process_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"  # at call time: workers are forked


def publish(model: str, stats: Any) -> None:
    """Record one batcher's counters for this process."""
    value = {"steps": stats.steps, "rows": stats.row_steps, "max": stats.max_batch,
             "updated": time.time()}  # fmt: skip
    _redis().hset(_key(), f"{process_label()}|{model}", json.dumps(value))


_latest: dict[str, Any] = {}  # model -> its newest counters, not yet written
_wake = threading.Event()
_writer: threading.Thread | None = None
_writer_lock = threading.Lock()


def publisher(model: str) -> Any:
    """A ContinuousBatcher on_stats callback for the model named `model`. It only
    notes a copy and wakes the writer thread: the decode loop never waits on Redis
    (down or slow, it would stall every stream)."""

    def note(stats: Any) -> None:
        global _writer
        _latest[model] = copy.copy(stats)
        with _writer_lock:
            if _writer is None or not _writer.is_alive():
                _writer = threading.Thread(target=_write_forever, name="batch-counters", daemon=True)
                _writer.start()
        _wake.set()

    return note


def _write_forever() -> None:
    while True:
        _wake.wait()
        _wake.clear()
        for model in list(_latest):
            stats = _latest.pop(model, None)
            if stats is None:
                continue
            try:
                publish(model, stats)
            except Exception:  # Redis down: this process's counters wait for the next
                logger.warning("could not write batching counters", exc_info=True)


def read_all() -> list[dict[str, Any]]:
    """Every process's counters: [{"process", "model", "steps", "rows", "max"}]."""
    client = _redis()
    now = time.time()
    rows, stale = [], []
    for field, raw in client.hgetall(_key()).items():
        field = field.decode() if isinstance(field, bytes) else field
        try:
            value = json.loads(raw)
            process, model = field.rsplit("|", 1)
        except ValueError:
            stale.append(field)
            continue
        if now - value.get("updated", 0) > STALE_S:
            stale.append(field)
            continue
        rows.append({"process": process, "model": model, **value})
    if stale:
        client.hdel(_key(), *stale)
    return sorted(rows, key=lambda r: (r["model"], r["process"]))
