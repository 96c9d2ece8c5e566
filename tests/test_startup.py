"""The embedded services and the one-line start-up errors, through real processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, data_dir: Path, timeout: float = 120, **env: str):  # type: ignore[no-untyped-def]
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    environment.update(GUARDWEB_DATA_DIR=str(data_dir), GUARDWEB_REDIS_PREFIX="startup-test", **env)
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=ROOT,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def embedded_dir() -> Path:  # type: ignore[no-untyped-def]
    # Not pytest's tmp_path: PostgreSQL runs as its own user and must traverse the
    # folder's parents, and pytest keeps those private (0700).
    data_dir = Path(tempfile.mkdtemp(prefix="guardweb-embedded-")) / "data"
    yield data_dir
    manage("services", "stop", data_dir=data_dir)
    shutil.rmtree(data_dir.parent, ignore_errors=True)


def test_the_embedded_servers_start_persist_and_are_shared_between_processes(embedded_dir):
    migrated = manage("migrate", "--noinput", data_dir=embedded_dir)
    assert migrated.returncode == 0, migrated.stderr
    made = manage(
        "shell", "-c",
        "from django.contrib.auth.models import User; User.objects.create_user('persisted');"
        "from django.conf import settings; print(settings.REDIS_URL)",
        data_dir=embedded_dir,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    # A second process finds the same Redis instead of starting another one.
    again = manage(
        "shell", "-c", "from django.conf import settings; print(settings.REDIS_URL)",
        data_dir=embedded_dir,
    )  # fmt: skip
    assert last_line(again.stdout) == last_line(made.stdout)
    assert (embedded_dir / "postgres" / "postmaster.pid").exists()

    stopped = manage("services", "stop", data_dir=embedded_dir)
    assert "redis" in stopped.stdout and "postgres" in stopped.stdout, stopped.stdout
    assert not (embedded_dir / "postgres" / "postmaster.pid").exists()

    # After a clean stop both servers come back with the data intact.
    read = manage(
        "shell", "-c",
        "from django.contrib.auth.models import User;"
        "print(User.objects.filter(username='persisted').count())",
        data_dir=embedded_dir,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    assert last_line(read.stdout) == "1"


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _one_clear_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


PROBE_ROUNDS = """
import sys
from pathlib import Path
from guardweb.embedded import StartupError, check_writable
failures = 0
for _ in range(int(sys.argv[2])):
    try:
        check_writable(Path(sys.argv[1]))
    except StartupError as exc:
        failures += 1
        print(exc, file=sys.stderr)
sys.exit(1 if failures else 0)
"""


def test_processes_starting_together_on_a_fresh_data_dir_all_pass_the_write_check(tmp_path):
    # The web server and the worker run this check at the same moment on the first
    # `make demo`; eight processes at once make the race likely on every run.
    data_dir = tmp_path / "fresh"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PROBE_ROUNDS, str(data_dir), "200"],
            cwd=ROOT, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for _ in range(8)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, errors
    assert list(data_dir.iterdir()) == []  # no probe file left behind


def test_a_data_dir_that_is_not_writable_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = _one_clear_line(manage("serve", data_dir=blocker / "data"))
    assert "not writable" in line


def test_a_port_in_use_is_one_clear_line(embedded_dir):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        line = _one_clear_line(manage("serve", "--port", str(port), data_dir=embedded_dir))
    assert f"port {port}" in line and "in use" in line


def test_an_unreachable_database_url_is_one_clear_line(tmp_path):
    # A free port of its own: the check must not depend on what else runs here
    # (a `make demo` on port 8000 made it report the port instead).
    line = _one_clear_line(
        manage(
            "serve", "--port", str(_free_port()), data_dir=tmp_path,
            DATABASE_URL="postgres://postgres@127.0.0.1:1/guardweb",
            REDIS_URL="redis://127.0.0.1:1/0",
        )
    )  # fmt: skip
    assert "cannot reach PostgreSQL" in line


def test_an_unreachable_redis_url_is_one_clear_line(embedded_dir):
    ok = manage("migrate", "--noinput", data_dir=embedded_dir)
    assert ok.returncode == 0, ok.stderr
    line = _one_clear_line(
        manage("worker", data_dir=embedded_dir, REDIS_URL="redis://127.0.0.1:1/0")
    )
    assert "cannot reach Redis" in line
