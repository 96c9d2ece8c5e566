"""manage.py combine_datasets: pool finished datasets of one constitution version.

    manage.py combine_datasets --datasets 3,5 [--user NAME]

Writes a new dataset holding every part's examples with the splits they had; a
source that repeats (or nearly repeats) one of an earlier listed part is left out
with its variants, so list reviewed datasets first.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifiers.datasets.combine import CombineError, combine_datasets
from classifiers.models import Dataset


class Command(BaseCommand):
    help = "Combine finished datasets of one constitution version into a new dataset."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--datasets", required=True,
            help="comma-separated dataset ids, in priority order (e.g. 3,5)",
        )  # fmt: skip
        parser.add_argument("--user", default=None, help="record the dataset as this user")

    def handle(self, *args: Any, **options: Any) -> None:
        from django.contrib.auth import get_user_model


        ids: list[int] = []
        for part in options["datasets"].split(","):
            part = part.strip()
            if not (part.isascii() and part.isdecimal()):
                raise CommandError(f"--datasets takes dataset ids like 3,5; got {part!r}")
            ids.append(int(part))
        found = {d.pk: d for d in Dataset.objects.filter(pk__in=ids)}
        missing = [pk for pk in ids if pk not in found]
        if missing:
            raise CommandError(f"no dataset {', '.join(f'#{pk}' for pk in missing)}")
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user {options['user']!r}")
        try:
            combined = combine_datasets(datasets=[found[pk] for pk in ids], user=user)
        except CombineError as err:
            raise CommandError(str(err)) from err
        info = combined.config["combined"]
        for name, part in info["parts"].items():
            self.stdout.write(
                f"{name}: {part['kept_sources']} of {part['sources']} sources "
                f"({part['duplicate_sources']} repeats left out, "
                f"{part['label_conflicts']} of them with the other label), "
                f"{part['examples']} examples"
            )
        self.stdout.write(self.style.SUCCESS(
            f"dataset #{combined.pk}: {combined.counts['total']} examples from "
            f"{', '.join(f'#{pk}' for pk in ids)}"
        ))  # fmt: skip
