"""manage.py train --dataset ID: train, calibrate and evaluate both classifiers in-process."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifiers.models import Dataset
from classifiers.training.config import TrainingError
from classifiers.training.run import run_training_job
from classifiers.training.services import training_start


class Command(BaseCommand):
    help = "Train the input and output classifiers on a finished dataset (in this process)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", type=int, required=True, help="dataset id")
        parser.add_argument("--mode", choices=("fast", "full"), default="fast",
                            help="mode of both classifiers")  # fmt: skip
        parser.add_argument("--epochs", type=int, default=None,
                            help="input-classifier epochs (default 20)")  # fmt: skip
        parser.add_argument("--output-epochs", type=int, default=None)
        parser.add_argument("--target-fpr", type=float, default=0.01)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--correction-weight", type=float, default=None,
                            help="loss weight of training prompts whose label a person "
                            "corrected (audit flips, review feedback); default 1")  # fmt: skip
        parser.add_argument("--no-output", action="store_true",
                            help="train the input classifier only")  # fmt: skip
        parser.add_argument("--activate", action="store_true",
                            help="activate both models when done")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:

        dataset = Dataset.objects.filter(pk=options["dataset"]).first()
        if dataset is None:
            raise CommandError(f"no dataset #{options['dataset']}")
        config = {
            "input_mode": options["mode"], "output_mode": options["mode"],
            "input_epochs": options["epochs"], "output_epochs": options["output_epochs"],
            "target_fpr": options["target_fpr"], "seed": options["seed"],
            "train_output": not options["no_output"],
            "correction_weight": options["correction_weight"],
        }  # fmt: skip
        try:
            run = training_start(
                dataset=dataset, config=config, user=None,
                activate_when_done=options["activate"], enqueue=False,
            )  # fmt: skip
        except TrainingError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"training run #{run.pk} on dataset #{dataset.pk}")
        run_training_job(run.pk, echo=lambda line: self.stdout.write(f"  {line}"))
        run.refresh_from_db()
        if run.status != "done":
            raise CommandError(f"run #{run.pk} {run.status}: {run.error}")
        for model in run.model_versions.order_by("kind"):
            m = model.metrics
            self.stdout.write(self.style.SUCCESS(
                f"{model.kind} model #{model.pk}: AUROC {_f(m.get('auroc'))}, "
                f"TPR {_f(m.get('tpr_at_threshold'))} at threshold {_f(model.threshold)} "
                f"(test FPR {_f(m.get('fpr_at_threshold'))}; held-out TPR "
                f"{_f(m.get('heldout_tpr_at_threshold'))}; keyword baseline TPR "
                f"{_f(m.get('keyword_tpr'))})"
                + (" [active]" if model.is_active() else "")
            ))  # fmt: skip


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"
