"""`manage.py worker`: a Celery worker for the `default` and/or `gpu` queues."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from guardweb import startup
from guardweb.celery import app


class Command(BaseCommand):
    help = "Run a Celery worker (uses CUDA for the gpu queue when present, else CPU)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--queues", default="default,gpu")
        parser.add_argument("--concurrency", type=int, default=1)
        parser.add_argument("--loglevel", default="INFO")
        parser.add_argument("--hostname", default=None)

    def handle(self, *args: Any, queues: str, concurrency: int, loglevel: str,
               hostname: str | None, **options: Any) -> None:

        startup.check_services()
        argv = ["worker", f"--queues={queues}", f"--concurrency={concurrency}",
                f"--loglevel={loglevel}", "--pool=prefork", "--without-gossip",
                "--without-mingle"]
        if hostname:
            argv.append(f"--hostname={hostname}")
        app.worker_main(argv)
