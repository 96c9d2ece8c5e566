"""manage.py evaluate --model ID: print (or write) a model's stored evaluation report.

With `--file PROMPTS` it scores the input classifier, as the guard serves it, on a
labelled file of your own (JSONL/CSV/Parquet: text, label, kind; see
classifiers/ml/eval/labelled_sets.py) and prints recall and false-positive rate per
kind with their 95% intervals; `--save NAME` keeps the result in the model's report
(shown on its page, comparable across models).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifiers.guard.engines import input_guard_for
from classifiers.ml.eval.intervals import format_rate
from classifiers.ml.eval.labelled_sets import (
    LabelledSetError,
    kind_report,
    read_labelled_set,
)
from classifiers.models import ModelVersion
from classifiers.training.registry import artifact_dir, record_evaluation

SCORE_BATCH = 64


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
        parser.add_argument("--file", default=None,
                            help="score a labelled prompt file (.jsonl/.csv/.parquet) instead")  # fmt: skip
        parser.add_argument("--save", default=None, metavar="NAME",
                            help="with --file: keep the result in the model's report as NAME")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:

        model = ModelVersion.objects.filter(pk=options["model"]).first()
        if model is None:
            raise CommandError(f"no model #{options['model']}")
        if options["file"]:
            self.score_file(model, options["file"], options["save"], options["json_out"])
            return
        if options["save"]:
            raise CommandError("--save needs --file")
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

    def score_file(
        self, model: ModelVersion, path: str, save: str | None, json_out: str | None
    ) -> None:
        if model.kind != "input":
            raise CommandError(
                "--file scores input classifiers (prompts); an output classifier "
                "needs replies to score"
            )
        try:
            prompts = read_labelled_set(path)
        except (LabelledSetError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        guard = input_guard_for(model)
        flagged: list[bool] = []
        for start in range(0, len(prompts), SCORE_BATCH):
            chunk = prompts[start : start + SCORE_BATCH]
            decisions = guard.decide(
                [[{"role": "user", "content": p.text}] for p in chunk], mode="shadow"
            )
            flagged += [d.flagged for d in decisions]
            self.stderr.write(f"scored {len(flagged)}/{len(prompts)}")
        name = save or Path(path).stem
        report = kind_report(
            prompts, flagged, name=name, target_fpr=model.thresholds.get("target_fpr")
        )
        self.stdout.write(f"{model} on {name} ({len(prompts)} prompts, threshold "
                          f"{_f(model.threshold)})")  # fmt: skip
        self.stdout.write(f"{'kind':<20} {'n':>6} {'recall':>22} {'FPR':>22}")
        rows = [("all", report["overall"]), *report["per_kind"].items()]
        for kind, row in rows:
            self.stdout.write(
                f"{kind[:20]:<20} {row['n']:>6} {format_rate(row['recall']):>22} "
                f"{format_rate(row['fpr']):>22}"
            )
        for warning in report["warnings"]:
            self.stdout.write(f"warning: {warning}")
        if json_out:
            Path(json_out).write_text(json.dumps(report, indent=2))
        if save:
            record_evaluation(model_version=model, report=report)
            self.stdout.write(f"saved in model #{model.pk}'s report as {save!r}")


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"
