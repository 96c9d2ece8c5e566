"""manage.py evaluate --model ID: print (or write) a model's stored evaluation report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifiers.models import ModelVersion
from classifiers.training.registry import artifact_dir


class Command(BaseCommand):
    help = "Show a model's evaluation report on the test or held-out-transforms split."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", type=int, required=True, help="model version id")
        parser.add_argument("--split", choices=("test", "heldout_transforms"),
                            default="test")  # fmt: skip
        parser.add_argument("--json", dest="json_out", default=None,
                            help="write the split's full report (with baselines) here")  # fmt: skip
        parser.add_argument("--verify", action="store_true",
                            help="also verify the artifact's checksums")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:

        model = ModelVersion.objects.filter(pk=options["model"]).first()
        if model is None:
            raise CommandError(f"no model #{options['model']}")
        block = model.report.get("splits", {}).get(options["split"])
        if block is None:
            raise CommandError(f"model #{model.pk} has no report on {options['split']}")
        if options["verify"]:
            from classifiers.ml.checkpoints import ArtifactError, verify_artifact

            try:
                manifest = verify_artifact(artifact_dir(model))
            except (ArtifactError, OSError) as exc:
                raise CommandError(f"artifact of model #{model.pk}: {exc}") from exc
            if manifest.get("checksum") != model.checksum:
                raise CommandError(f"artifact of model #{model.pk} has another checksum")
            self.stdout.write("artifact verified")
        if options["json_out"]:
            Path(options["json_out"]).write_text(json.dumps(
                {"model": model.pk, "kind": model.kind, "split": options["split"],
                 "thresholds": model.thresholds, **block}, indent=2))  # fmt: skip
        rows = [("classifier", block["classifier"])] + list(block.get("baselines", {}).items())
        self.stdout.write(f"{model} on {options['split']} "
                          f"(n={block['classifier'].get('n')}, threshold "
                          f"{_f(model.threshold)})")  # fmt: skip
        self.stdout.write(f"{'':<12} {'AUROC':>7} {'TPR@thr':>8} {'FPR@thr':>8} {'TPR@1%':>7}")
        for name, report in rows:
            self.stdout.write(
                f"{name:<12} {_f(report.get('auroc')):>7} "
                f"{_f(report.get('tpr_at_threshold')):>8} "
                f"{_f(report.get('fpr_at_threshold')):>8} "
                f"{_f(report.get('tpr_at_1pct_fpr')):>7}"
            )
        for family, entry in block["classifier"].get("per_transform", {}).items():
            self.stdout.write(f"  transform {family:<20} recall {_f(entry.get('recall'))}")


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"
