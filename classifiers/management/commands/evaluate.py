"""manage.py evaluate --model ID: print (or write) a model's stored evaluation report.

With `--file PROMPTS` it scores the input classifier, as the guard serves it, on a
labelled file of your own (JSONL/CSV/Parquet: text, label, kind; see
classifiers/ml/eval/labelled_sets.py) and prints recall and false-positive rate per
kind with their 95% intervals; `--save NAME` keeps the result in the model's report
(shown on its page, comparable across models). Given an output classifier, every
line needs a `response`: each reply is scored as the answer to its prompt, token by
token as the guard streams it (the model's own thresholds, per category), and
"flagged" means enforce would have halted it somewhere.

Evaluation sets (the pages under /classifiers/evaluation-sets/) from the command line:
`--import FILE --set NAME` stores a labelled file as a set; `--model N --set NAME`
scores the model on it in this process, as the page's worker job does, and keeps the
result on the set's page and the model's.
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
        parser.add_argument("--model", type=int, default=None, help="model version id")
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
        parser.add_argument("--set", dest="set_name", default=None, metavar="NAME",
                            help="an evaluation set: score --model on it, or --import into it")  # fmt: skip
        parser.add_argument("--whole-guard", action="store_true",
                            help="with --set: also generate each reply and let the output "
                            "classifier halt it (refused = either classifier)")  # fmt: skip
        parser.add_argument("--max-new-tokens", type=int, default=64,
                            help="with --whole-guard: reply length")  # fmt: skip
        parser.add_argument("--import", dest="import_file", default=None, metavar="FILE",
                            help="with --set: store a labelled file as a new evaluation set")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        if options["import_file"]:
            self.import_set(options["import_file"], options["set_name"])
            return
        if options["model"] is None:
            raise CommandError("give --model ID (or --import FILE --set NAME)")
        model = ModelVersion.objects.filter(pk=options["model"]).first()
        if model is None:
            raise CommandError(f"no model #{options['model']}")
        if options["set_name"]:
            self.score_set(model, options["set_name"], options["json_out"],
                           whole_guard=options["whole_guard"],
                           max_new_tokens=options["max_new_tokens"])  # fmt: skip
            return
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

    def import_set(self, path: str, name: str | None) -> None:
        from classifiers.evaluation.sets import (
            EvaluationSetError,
            import_evaluation_set,
        )

        if not name:
            raise CommandError("--import needs --set NAME (the new set's name)")
        try:
            evaluation_set = import_evaluation_set(name=name, path=path, user=None)
        except (EvaluationSetError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        stats = evaluation_set.stats
        self.stdout.write(
            f"evaluation set #{evaluation_set.pk} {evaluation_set.name!r}: {stats['prompts']} "
            f"prompts ({stats['harmful']} harmful, {stats['benign']} benign, "
            f"{len(stats['kinds'])} kinds)"
        )

    def score_set(
        self, model: ModelVersion, name: str, json_out: str | None, *,
        whole_guard: bool = False, max_new_tokens: int = 64,
    ) -> None:  # fmt: skip
        from classifiers.evaluation.run import run_evaluation_job
        from classifiers.evaluation.services import EvaluationError, start_evaluation
        from classifiers.models import EvaluationSet

        evaluation_set = EvaluationSet.objects.filter(name=name).first()
        if evaluation_set is None:
            raise CommandError(
                f"no evaluation set {name!r}: import one with --import FILE --set NAME"
            )
        try:
            run = start_evaluation(
                evaluation_set=evaluation_set, model_version=model, user=None,
                whole_guard=whole_guard, max_new_tokens=max_new_tokens, enqueue=False,
            )  # fmt: skip
        except EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(f"evaluation #{run.pk}: scoring {run.total} prompts")
        run_evaluation_job(run.pk)
        run.refresh_from_db()
        if run.status != "done":
            raise CommandError(f"evaluation #{run.pk} {run.status}: {run.error}")
        self.print_report(model, run.report, json_out)

    def print_report(self, model: ModelVersion, report: dict, json_out: str | None) -> None:
        self.stdout.write(f"{model} on {report['name']} ({report['overall']['n']} prompts, "
                          f"threshold {_f(model.threshold)})")  # fmt: skip
        self.stdout.write(f"{'kind':<20} {'n':>6} {'recall':>22} {'FPR':>22}")
        rows = [("all", report["overall"]), *report["per_kind"].items()]
        for kind, row in rows:
            self.stdout.write(
                f"{kind[:20]:<20} {row['n']:>6} {format_rate(row['recall']):>22} "
                f"{format_rate(row['fpr']):>22}"
            )
        guard = report.get("guard")
        if guard:
            self.stdout.write(
                f"whole guard (output model #{guard['output_model']}, "
                f"{guard['max_new_tokens']} tokens): {guard['input_blocked']} blocked at "
                f"input, {guard['output_halted']} halted mid-reply, of {guard['n']}"
            )
            for kind, counts in guard["per_kind"].items():
                self.stdout.write(
                    f"  {kind[:20]:<20} input {counts['input_blocked']:>4}  "
                    f"output {counts['output_halted']:>4}  of {counts['n']}"
                )
        for warning in report["warnings"]:
            self.stdout.write(f"warning: {warning}")
        if json_out:
            Path(json_out).write_text(json.dumps(report, indent=2))

    def score_file(
        self, model: ModelVersion, path: str, save: str | None, json_out: str | None
    ) -> None:
        try:
            prompts = read_labelled_set(path)
        except (LabelledSetError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        if model.kind == "output":
            flagged = self.score_replies(model, prompts)
            self.report_file(model, prompts, flagged, path, save, json_out)
            return
        with_reply = sum(1 for p in prompts if p.response)
        if with_reply:
            # Their labels are the replies': a refusal to a harmful request is a 0.
            raise CommandError(
                f"{with_reply} line(s) carry a response, labelled as replies: score "
                "them with an output classifier (--model of kind output)"
            )
        guard = input_guard_for(model)
        flagged = []
        for start in range(0, len(prompts), SCORE_BATCH):
            chunk = prompts[start : start + SCORE_BATCH]
            decisions = guard.decide(
                [[{"role": "user", "content": p.text}] for p in chunk], mode="shadow"
            )
            flagged += [d.flagged for d in decisions]
            self.stderr.write(f"scored {len(flagged)}/{len(prompts)}")
        self.report_file(model, prompts, flagged, path, save, json_out)

    def score_replies(self, model: ModelVersion, prompts: list[Any]) -> list[bool]:
        """Whether the output classifier would halt each line's reply (its category
        from the constitution's active input classifier, as served)."""
        from classifiers.guard.engines import active_models, build_engine

        missing = sum(1 for p in prompts if not p.response)
        if missing:
            raise CommandError(
                f"{missing} line(s) have no response: an output classifier scores "
                "replies (give each line a response)"
            )
        input_model, _ = active_models(model.constitution)
        engine = build_engine(input_model, model, generates=False)
        flagged = []
        for index, prompt in enumerate(prompts):
            messages = [{"role": "user", "content": prompt.text}]
            category = (
                engine.classify([messages], mode="shadow")[0].category
                if input_model
                else None
            )
            guard = engine.reply_guard(messages, mode="shadow", category=category)
            assert guard is not None
            guard.feed(prompt.response, final=True)
            guard.finish()
            flagged.append(guard.halted_at is not None)
            if (index + 1) % 25 == 0 or index + 1 == len(prompts):
                self.stderr.write(f"scored {index + 1}/{len(prompts)} replies")
        return flagged

    def report_file(
        self, model: ModelVersion, prompts: list[Any], flagged: list[bool], path: str,
        save: str | None, json_out: str | None,
    ) -> None:  # fmt: skip
        name = save or Path(path).stem
        report = kind_report(
            prompts, flagged, name=name, target_fpr=model.thresholds.get("target_fpr")
        )
        self.print_report(model, report, json_out)
        if save:
            record_evaluation(model_version=model, report=report)
            self.stdout.write(f"saved in model #{model.pk}'s report as {save!r}")


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"
