"""`manage.py demo`: migrate, create the demo users, seed, and run web + worker.

1. Check the data dir, PostgreSQL and Redis (embedded ones start on demand).
2. Migrate; create the demo admin (password kept in the data dir, printed).
3. Seed the demo constitutions (idempotent), then run the per-app demo steps.
4. Start `manage.py serve` and `manage.py worker` as child processes, print the
   URL, and wait; Ctrl-C stops both, then stops the embedded servers cleanly.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from guardweb import embedded, startup
from guardweb.roles import POLICY_AUTHOR, REVIEWER, VIEWER

DEMO_USERS = (("alice", POLICY_AUTHOR), ("rita", REVIEWER), ("victor", VIEWER))


class Command(BaseCommand):
    help = "Set up the demo (users, data) and run the web server and a worker."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-serve", action="store_true", help="set up, then exit")

    def handle(self, *args: Any, host: str, port: int, no_serve: bool, **options: Any) -> None:
        if not no_serve:
            startup.check_port_free(host, port)
        startup.check_services()
        call_command("migrate", interactive=False, verbosity=0)
        password = self.ensure_users()
        self.seed()
        if no_serve:
            self.print_banner(host, port, password, running=False)
            return
        self.run_processes(host, port, password)

    def ensure_users(self) -> str:
        from django.contrib.auth.models import Group, User

        password_file = settings.DATA_DIR / "demo-password"
        if not password_file.exists():
            password_file.write_text(secrets.token_urlsafe(12))
            password_file.chmod(0o600)
        password = password_file.read_text().strip()
        admin, _ = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        admin.set_password(password)
        admin.save()
        for username, role in DEMO_USERS:
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.save()
            user.groups.add(Group.objects.get(name=role))
        return password

    def seed(self) -> None:
        from django.core.management import get_commands

        for command in ("seed_demo", "demo_models"):
            if command in get_commands():
                call_command(command)

    def print_banner(self, host: str, port: int, password: str, *, running: bool) -> None:
        url = f"http://{host}:{port}/"
        lines = [
            "",
            "Guardweb demo" + (f" is running at {url}" if running else f" is set up ({url})"),
            f"  admin login:   admin / {password}",
            "  also:          alice (policy author), rita (reviewer), victor (viewer); same password",
            f"  health:        {url}healthz",
            f"  data dir:      {settings.DATA_DIR}",
        ]
        if running:
            lines.append("  Ctrl-C stops the web server, the worker and the embedded services.")
        self.stdout.write("\n".join(lines) + "\n")

    def run_processes(self, host: str, port: int, password: str) -> None:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        children = [
            subprocess.Popen([*manage, "serve", "--host", host, "--port", str(port)], env=env),
            subprocess.Popen([*manage, "worker", "--queues", "default,gpu"], env=env),
        ]
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        self.print_banner(host, port, password, running=True)
        try:
            while not stopping and all(child.poll() is None for child in children):
                time.sleep(0.5)
        finally:
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
            if not os.getenv("DATABASE_URL") and not os.getenv("REDIS_URL"):
                from django.db import connections

                connections.close_all()
                stopped = embedded.stop_services(settings.DATA_DIR)
                self.stdout.write(f"stopped embedded services: {', '.join(stopped) or 'none'}")
        failed = [c for c in children if c.returncode not in (0, -signal.SIGTERM, None)]
        if failed and not stopping:
            sys.exit(1)
