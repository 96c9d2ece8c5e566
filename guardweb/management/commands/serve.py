"""`manage.py serve`: the ASGI server (HTTP + websockets) under uvicorn."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from guardweb import startup


class Command(BaseCommand):
    help = "Serve Guardweb (HTTP and websockets) with uvicorn."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1)

    def handle(self, *args: Any, host: str, port: int, workers: int, **options: Any) -> None:
        import uvicorn

        startup.check_port_free(host, port)
        startup.check_services()
        self.stdout.write(f"Guardweb serving on http://{host}:{port}/")
        uvicorn.run(
            "guardweb.asgi:application",
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            lifespan="off",
            ws_ping_interval=20,
        )
