"""manage.py generate_traffic NAME: a pool of everyday requests written by the generator.

Everyday requests over a broad list of topics no constitution is about (see
classifiers/ml/data/everyday.py), cleaned and deduplicated, into the traffic pool
NAME. Build it once; datasets of any constitution mix it in as benign traffic.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifiers.core.model_cache import local_generator
from classifiers.datasets.export import format_eta, throttled
from classifiers.datasets.traffic import TrafficError, everyday_config, generate_traffic
from classifiers.ml.data.everyday import EVERYDAY_TOPICS


class Command(BaseCommand):
    help = "Generate everyday user requests into a traffic pool (benign negatives)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="pool name (an existing pool is added to)")
        parser.add_argument("--per-topic", type=int, default=10,
                            help=f"requests per topic ({len(EVERYDAY_TOPICS)} topics)")  # fmt: skip
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--max-rounds", type=int, default=3)

    def handle(self, *args: Any, **options: Any) -> None:
        if not 1 <= options["per_topic"] <= 200:
            raise CommandError("--per-topic must be between 1 and 200")
        started = time.monotonic()

        def line(stage: str, done: int, total: int, eta: float | None) -> None:
            self.stdout.write(f"  {stage:<16} {done}/{total}  ETA {format_eta(eta)}")

        echo = throttled(line, 3.0)
        try:
            pool = generate_traffic(
                name=options["name"], generator=local_generator(),
                cfg=everyday_config(seed=options["seed"], max_rounds=options["max_rounds"]),
                per_topic=options["per_topic"],
                on_progress=lambda *, stage, done, total, **_: echo(stage, done, total, None),
            )  # fmt: skip
        except TrafficError as exc:
            raise CommandError(str(exc)) from exc
        last = pool.stats["last_import"]
        self.stdout.write(
            f"pool {pool.name!r} (#{pool.pk}): {last['kept']} everyday requests added in "
            f"{time.monotonic() - started:.0f} s; it holds {pool.stats['total']} "
            f"({', '.join(f'{s} {n}' for s, n in sorted(pool.stats['splits'].items()))})"
        )
