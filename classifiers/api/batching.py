"""Dynamic batching for /api/v1/classify.

Concurrent classify requests for the same input classifier are queued; a
background thread takes the first, waits up to `max_wait_s` (10 ms) for more or
until `max_batch` (32) are in, then makes ONE `engine.classify([...])` call for
all of them. Each caller holds a `concurrent.futures.Future` for its own decision
(async views await it with `asyncio.wrap_future`), so the event loop never blocks.

Why: a MiniLM forward on 32 prompts costs little more than on one, so under load
throughput rises several-fold while each request waits at most ~10 ms extra.
It waits only while company is on its way: requests `announce()` themselves when
they arrive and say when they are ready to submit, so a lone caller (nothing else
arriving) is scored at once instead of waiting out the 10 ms.

`GUARDWEB_CLASSIFY_BATCHING=0` (or the module flag `ENABLED = False`, which the
benchmark toggles) sends every request through its own engine call instead.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from classifiers.ml.serving.engine import InputDecision
from classifiers.ml.types import Message

logger = logging.getLogger(__name__)

ENABLED: bool | None = None  # None = read GUARDWEB_CLASSIFY_BATCHING (default on)
MAX_BATCH = 32  # most requests one engine call serves
MAX_WAIT_S = 0.010  # how long the first request of a batch waits for company

ClassifyFn = Callable[[list[list[Message]]], list[InputDecision]]
_STOP = object()


def batching_enabled() -> bool:
    if ENABLED is not None:
        return ENABLED
    return os.getenv("GUARDWEB_CLASSIFY_BATCHING", "1").strip().lower() not in {
        "0", "false", "no", "off",
    }  # fmt: skip


class _Arrivals:
    """Requests that have arrived and will submit soon (their parsing and database
    work is under way): the only company worth waiting for."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.count += n


_arrivals = _Arrivals()


def announce() -> Callable[[], None]:
    """A classify request is on its way; call the result once it is about to submit
    (or gave up). Calling it again does nothing."""
    _arrivals.add(1)
    done = False

    def ready() -> None:
        nonlocal done
        if not done:
            done = True
            _arrivals.add(-1)

    return ready


@dataclass
class _Pending:
    messages: list[Message]
    future: Future[InputDecision] = field(default_factory=Future)


class Batcher:
    """Collects classify requests and runs them in batches on one thread."""

    def __init__(
        self,
        classify: ClassifyFn,
        *,
        max_batch: int = MAX_BATCH,
        max_wait_s: float = MAX_WAIT_S,
        name: str = "classify",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.classify = classify
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.calls = 0  # engine calls made (tests and the bench read these)
        self.requests = 0  # requests served
        self._queue: queue.Queue[_Pending | object] = queue.Queue()
        self._thread = threading.Thread(
            target=self._run, name=f"batcher-{name}", daemon=True
        )
        self._thread.start()

    def submit(self, messages: list[Message]) -> Future[InputDecision]:
        pending = _Pending(messages)
        self._queue.put(pending)
        return pending.future

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=5)

    # -- the batching thread ----------------------------------------------------

    def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """The batch starting with `first`; True when a stop was requested."""
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0 and _arrivals.count > 0:
                    # Someone is on the way: wait a little (re-checking often).
                    item = self._queue.get(timeout=min(remaining, 0.002))
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                if remaining > 0 and _arrivals.count > 0:
                    continue
                break
            if item is _STOP:
                return batch, True
            assert isinstance(item, _Pending)
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            assert isinstance(first, _Pending)
            batch, stop = self._collect(first)
            # A caller that gave up (client disconnected) cancelled its future.
            live = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                decisions = self.classify([p.messages for p in live])
                if len(decisions) != len(live):
                    raise RuntimeError(
                        "the classifier returned a wrong number of results"
                    )
            except BaseException as exc:  # every caller must hear about it
                logger.exception("batched classify of %d requests failed", len(live))
                for pending in live:
                    pending.future.set_exception(exc)
                continue
            finally:
                self.calls += 1
                self.requests += len(live)
            for pending, decision in zip(live, decisions, strict=True):
                pending.future.set_result(decision)


_lock = threading.Lock()
_batchers: dict[object, Batcher] = {}
# Unbatched path: one engine call per request, a few at a time.
_direct = ThreadPoolExecutor(max_workers=4, thread_name_prefix="classify")


def batcher_for(key: object, classify: ClassifyFn) -> Batcher:
    """One batcher per engine (`key`: the input model's id), started on first use."""
    with _lock:
        batcher = _batchers.get(key)
        if batcher is None:
            batcher = _batchers[key] = Batcher(classify, name=str(key))
        return batcher


def classify_one(
    key: object, classify: ClassifyFn, messages: list[Message]
) -> Future[InputDecision]:
    """A future for one conversation's decision: batched or direct per the switch."""
    if batching_enabled():
        return batcher_for(key, classify).submit(messages)
    return _direct.submit(lambda: classify([messages])[0])
