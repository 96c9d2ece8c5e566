"""Seed the demo constitutions from constitutions/demo_data/*.yaml (idempotent).

Each file goes through the normal YAML import, then version 1 is published. A
constitution that already has a published version is left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from constitutions import services, yaml_io
from constitutions.models import Constitution

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo_data"


class Command(BaseCommand):
    help = "Create the demo constitutions (CBRN and fraud) with version 1 published."

    def handle(self, *args: Any, **options: Any) -> None:
        for path in sorted(DEMO_DIR.glob("*.yaml")):
            text = path.read_text(encoding="utf-8")
            slug = yaml_io.parse_yaml(text)["slug"]
            with transaction.atomic():
                existing = Constitution.objects.filter(slug=slug).first()
                if existing is not None and existing.versions.exists():
                    self.stdout.write(f"{slug}: already published, left alone")
                    continue
                if existing is None:
                    constitution = yaml_io.import_yaml(text, user=None, mode="new")
                else:
                    constitution = yaml_io.import_yaml(
                        text, user=None, mode="replace", target=existing
                    )
                version = services.publish_draft(
                    constitution, user=None, note="Demo seed"
                )
            self.stdout.write(
                f"{slug}: published {version.label} ({version.content_hash[:12]})"
            )
