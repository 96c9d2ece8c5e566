"""manage.py calibrate_cascade --constitution SLUG --heavy ID: calibrate (and serve) a
probe cascade in this process, printing progress and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifiers.guard.cascade_run import run_cascade_job
from classifiers.guard.policy import DEFAULT_ESCALATE_FRACTION, CascadeError
from classifiers.guard.services import start_cascade_calibration
from classifiers.models import CascadeCalibration, GuardPolicy, ModelVersion
from constitutions.models import Constitution


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


class Command(BaseCommand):
    help = (
        "Calibrate a probe cascade: the active output model escalates uncertain streams "
        "to the --heavy output model; the result is served unless --no-use."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--constitution", required=True, help="constitution slug")
        parser.add_argument("--heavy", type=int, required=True,
                            help="id of the heavier output model")  # fmt: skip
        parser.add_argument("--escalate", type=float, default=None,
                            help="share of benign streams to escalate (default 0.05)")  # fmt: skip
        parser.add_argument("--target-fpr", type=float, default=None,
                            help="false-positive target (default: the probe's)")  # fmt: skip
        parser.add_argument("--no-use", action="store_true",
                            help="calibrate and report, but do not serve it")  # fmt: skip
        parser.add_argument("--json", dest="json_out", default=None,
                            help="write the full report here")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:

        constitution = Constitution.objects.filter(slug=options["constitution"]).first()
        if constitution is None:
            raise CommandError(f"no constitution {options['constitution']!r}")
        heavy = ModelVersion.objects.filter(pk=options["heavy"]).first()
        if heavy is None:
            raise CommandError(f"no model #{options['heavy']}")
        try:
            job = start_cascade_calibration(
                constitution=constitution, heavy_model=heavy,
                escalate_fraction=DEFAULT_ESCALATE_FRACTION
                if options["escalate"] is None else options["escalate"],
                target_fpr=options["target_fpr"], use_when_done=not options["no_use"],
                enqueue=False,
            )  # fmt: skip
        except CascadeError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"calibration #{job.pk}: probe #{job.probe_model_id}, heavy #{heavy.pk}")
        run_cascade_job(job.pk)
        job = CascadeCalibration.objects.get(pk=job.pk)
        if job.status != "done":
            raise CommandError(f"calibration #{job.pk} {job.status}: {job.error}")
        if options["json_out"]:
            Path(options["json_out"]).write_text(json.dumps(job.report, indent=2))
        s = job.settings
        stats = job.report["calibration"]["stats"]
        self.stdout.write(
            f"band [{s['band'][0]:.4f}, {s['band'][1]:.4f}], weight {s['weight']}, "
            f"threshold {s['threshold']:.4f}; calibration escalation: "
            f"{stats['escalation_rate_benign']:.1%} of benign, {stats['escalation_rate']:.1%} of all"
        )
        self.stdout.write(f"{'split':<20} {'':<8} {'AUROC':>7} {'TPR@thr':>8} {'FPR@thr':>8} {'escal.':>7}")
        for split, block in job.report["splits"].items():
            for name in ("probe", "heavy", "cascade"):
                r = block[name]
                esc = f"{block['escalation_rate']:.1%}" if name == "cascade" else ""
                self.stdout.write(
                    f"{split:<20} {name:<8} {_f(r['auroc']):>7} {_f(r['tpr_at_threshold']):>8} "
                    f"{_f(r['fpr_at_threshold']):>8} {esc:>7}"
                )
        cost = job.report["cost"]
        self.stdout.write(
            f"heavy tokens: {cost['heavy_token_fraction']:.1%} of all; extra compute vs "
            f"generation {cost['extra_compute_vs_generation']:.1%} (heavy on everything: "
            f"{cost['heavy_on_everything_vs_generation']:.0%})"
        )

        served = GuardPolicy.for_constitution(constitution).cascade_id == job.pk
        self.stdout.write("served now" if served else "not served (use it from the guard settings)")
