"""`manage.py services status|stop`: the embedded PostgreSQL and Redis."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from guardweb import embedded, health


class Command(BaseCommand):
    help = "Show or stop the embedded PostgreSQL and Redis under the data dir."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("action", choices=["status", "stop"])

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "status":
            self.stdout.write(f"data dir: {settings.DATA_DIR}")
            self.stdout.write(f"postgres: {health.check_postgres()}")
            self.stdout.write(f"redis: {health.check_redis(settings.REDIS_URL)}")
            return
        from django.db import connections

        connections.close_all()
        stopped = embedded.stop_services(settings.DATA_DIR)
        self.stdout.write(f"stopped: {', '.join(stopped) or 'nothing was running'}")
