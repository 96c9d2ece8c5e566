"""A real loopback HTTP server that speaks OpenAI's /v1/chat/completions.

It wraps a ChatGenerator (in the tests a LocalGenerator around a tiny random model)
and has switches to simulate the failure modes OpenAICompatGenerator must survive or
report: garbage answers, 500s the first N times, 4xx errors, and hanging.

With `"stream": true` it answers in OpenAI's SSE format: the generated text in
small pieces (`piece_chars` characters each) at `pieces_per_second`, the way a
real server streams tokens, and it records whether each stream ran to its end or
the client closed it first (`stats.finished_streams` / `stats.aborted_streams`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from classifiers.ml.types import ChatGenerator


@dataclass
class ServerSwitches:
    garbage: bool = False  # answer 200 with a body that is not a completion
    fail_first: int = 0  # answer HTTP 500 to this many requests first
    status_error: int = 0  # when set (e.g. 400), answer that status with an error
    hang_seconds: float = 0.0  # sleep this long before answering
    delay_seconds: float = 0.0  # sleep before answering (for concurrency tests)
    piece_chars: int = 3  # streaming: characters per SSE chunk
    pieces_per_second: float = 0.0  # streaming pace (0: as fast as it can)


@dataclass
class ServerStats:
    requests: int = 0  # every POST seen
    in_flight: int = 0  # requests being handled now
    max_in_flight: int = 0  # the most requests ever handled at once
    payloads: list[dict[str, Any]] = field(default_factory=list)
    finished_streams: int = 0  # streams sent to their [DONE]
    aborted_streams: int = 0  # streams the client closed before their end
    pieces_sent: int = 0  # SSE content chunks written, over all streams


class OpenAITestServer:
    """Use as `with OpenAITestServer(gen) as server:`; see `base_url`."""

    def __init__(self, generator: ChatGenerator) -> None:
        self.generator = generator
        self.switches = ServerSwitches()
        self.stats = ServerStats()
        self._lock = threading.Lock()  # guards stats and switches.fail_first
        self._gen_lock = threading.Lock()  # the model runs one request at a time
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAITestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OpenAITestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # keep pytest output clean

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                with owner._lock:
                    owner.stats.requests += 1
                    owner.stats.in_flight += 1
                    owner.stats.max_in_flight = max(
                        owner.stats.max_in_flight, owner.stats.in_flight
                    )
                try:
                    self._handle(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)
                finally:
                    with owner._lock:
                        owner.stats.in_flight -= 1

            def _handle(self, raw: bytes) -> None:
                sw = owner.switches
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if sw.hang_seconds:
                    time.sleep(sw.hang_seconds)
                if sw.delay_seconds:
                    time.sleep(sw.delay_seconds)
                with owner._lock:
                    fail = sw.fail_first > 0
                    if fail:
                        sw.fail_first -= 1
                if fail:
                    self._send(500, {"error": {"message": "simulated overload"}})
                    return
                if sw.status_error:
                    self._send(
                        sw.status_error,
                        {"error": {"message": "model 'nope' does not exist"}},
                    )
                    return
                if sw.garbage:
                    self._send_raw(
                        200, b"<html>definitely not json</html>", "text/html"
                    )
                    return
                payload = json.loads(raw)
                with owner._lock:
                    owner.stats.payloads.append(payload)
                with owner._gen_lock:
                    [text] = owner.generator.chat(
                        [payload["messages"]],
                        max_new_tokens=int(payload.get("max_tokens", 16)),
                        temperature=float(payload.get("temperature", 0.0)),
                        top_p=float(payload.get("top_p", 1.0)),
                        seed=payload.get("seed"),
                    )
                if payload.get("stream"):
                    self._stream(text, payload)
                    return
                self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "model": payload.get("model", "test"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                    },
                )

            def _stream(self, text: str, payload: dict[str, Any]) -> None:
                sw = owner.switches
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

                def event(delta: dict[str, Any], finish: str | None = None) -> None:
                    chunk = {
                        "id": "chatcmpl-test", "object": "chat.completion.chunk",
                        "model": payload.get("model", "test"),
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    }  # fmt: skip
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()

                step = max(1, sw.piece_chars)
                try:
                    event({"role": "assistant", "content": ""})
                    for start in range(0, len(text), step):
                        if sw.pieces_per_second:
                            time.sleep(1 / sw.pieces_per_second)
                        event({"content": text[start : start + step]})
                        with owner._lock:
                            owner.stats.pieces_sent += 1
                    event({}, "stop")
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with owner._lock:
                        owner.stats.aborted_streams += 1
                    return
                with owner._lock:
                    owner.stats.finished_streams += 1

            def _send(self, status: int, body: dict[str, Any]) -> None:
                self._send_raw(status, json.dumps(body).encode(), "application/json")

            def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
