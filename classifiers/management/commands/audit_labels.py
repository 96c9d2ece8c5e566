"""manage.py audit_labels: run a label audit of a dataset, import reviewers'
decisions from a file, and apply them (a new dataset).

    manage.py audit_labels --dataset 3 [--folds 5] [--spot-check 20] [--export queue.jsonl]
    manage.py audit_labels --audit 1 --decisions decided.jsonl [--user NAME] [--learn --export q.jsonl]
    manage.py audit_labels --audit 1 --apply [--user NAME]

The export has one line per queued item (source_id, text_sha256, text, label,
category, harm_score, suspect, suggested_category, decision); the decisions file takes
lines {"source_id": ..., "decision": "keep" | "flip" | "drop", "new_category": ...}, so
a team can triage in a spreadsheet or notebook and record the result here.

    manage.py audit_labels --audit 1 --export-decisions archive.jsonl

writes the decisions made so far keyed by the SHA-256 of each text, with no text in
the file. Such an archive can be given to --decisions for a later audit (lines
{"text_sha256": ..., "label": ..., "decision": ...}): a regenerated dataset with the
same seeds gets the same texts, so a review outlives the data directory. Archive
lines for texts not in the queue, or whose label there differs, are skipped and
counted.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifiers.audit.report import audit_report
from classifiers.audit.run import AuditError, run_audit_job
from classifiers.audit.services import apply_audit, decide, learn_order, start_audit
from classifiers.models import Dataset, LabelAudit
from classifiers.models.audit import DEFAULT_SPOT_CHECK


class Command(BaseCommand):
    help = "Audit a dataset's generated labels (cross-validated suspects for people to check)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", type=int, help="run a new audit of this dataset")
        parser.add_argument("--audit", type=int, help="an existing audit (with --decisions/--apply)")
        parser.add_argument("--folds", type=int, default=5)
        parser.add_argument("--spot-check", type=int, default=None,
                            help="random non-suspects to queue too (default 20)")  # fmt: skip
        parser.add_argument("--review-splits", default="",
                            help="queue every generated source of these splits too "
                            "(comma-separated, e.g. test,calibration)")  # fmt: skip
        parser.add_argument("--export", default=None, help="write the queue here (JSONL)")
        parser.add_argument("--decisions", default=None, help="JSONL of decisions to record")
        parser.add_argument("--export-decisions", default=None,
                            help="write the decisions so far here, keyed by text hash "
                            "(no texts), to replay them on a regenerated dataset")  # fmt: skip
        parser.add_argument("--learn", action="store_true",
                            help="score the undecided items by how likely their label is "
                            "wrong, learned from the decisions so far (exported as wrong_score)")  # fmt: skip
        parser.add_argument("--apply", action="store_true", help="write the audited dataset")
        parser.add_argument("--user", default=None, help="record decisions as this user")

    def handle(self, *args: Any, **options: Any) -> None:

        user = self._user(options["user"])
        if bool(options["dataset"]) == bool(options["audit"]):
            raise CommandError("give either --dataset (a new audit) or --audit (an existing one)")
        if options["dataset"]:
            dataset = Dataset.objects.filter(pk=options["dataset"]).first()
            if dataset is None:
                raise CommandError(f"no dataset #{options['dataset']}")
            spot = options["spot_check"]
            try:
                audit = start_audit(
                    dataset=dataset, user=user, folds=options["folds"],
                    spot_check=DEFAULT_SPOT_CHECK if spot is None else spot,
                    review_splits=[x for x in options["review_splits"].split(",") if x],
                    enqueue=False,
                )  # fmt: skip
            except AuditError as err:
                raise CommandError(str(err)) from err
            self.stdout.write(f"audit #{audit.pk} of dataset #{dataset.pk}")
            run_audit_job(audit.pk)
        else:
            audit = LabelAudit.objects.filter(pk=options["audit"]).first()
            if audit is None:
                raise CommandError(f"no audit #{options['audit']}")
        audit.refresh_from_db()
        if audit.status != "done":
            raise CommandError(f"audit #{audit.pk} {audit.status}: {audit.error}")
        if options["decisions"]:
            self._record(audit, Path(options["decisions"]), user)
        if options["learn"]:

            try:
                learned = learn_order(audit)
            except AuditError as err:
                raise CommandError(str(err)) from err
            self.stdout.write(
                f"{learned['scored']} undecided items scored from {learned['decided']} "
                f"decisions ({learned['wrong']} wrong); out-of-fold AUROC {learned['auroc']}"
            )
        self._print(audit)
        if options["export"]:
            self._export(audit, Path(options["export"]))
        if options["export_decisions"]:
            self._export_decisions(audit, Path(options["export_decisions"]))
        if options["apply"]:

            try:
                copy = apply_audit(audit=audit, user=user)
            except AuditError as err:
                raise CommandError(str(err)) from err
            self.stdout.write(f"dataset #{copy.pk} written ({copy.counts.get('total')} examples)")

    def _user(self, name: str | None) -> Any:
        if not name:
            return None
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(username=name).first()
        if user is None:
            raise CommandError(f"no user {name!r}")
        return user

    def _record(self, audit: Any, path: Path, user: Any) -> None:

        items = {item.source_id: item for item in audit.items.all()}
        by_hash: dict[str, list[Any]] = {}
        for item in items.values():
            by_hash.setdefault(text_sha256(item.text), []).append(item)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise CommandError(f"cannot read {path}: {err.strerror}") from err
        parsed, not_queued, relabelled = [], 0, 0
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if "text_sha256" in row:
                    digest, label = row["text_sha256"], row["label"]
                    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                        raise ValueError("text_sha256 must be 64 lowercase hex digits")
                    if type(label) is not int or label not in (0, 1):
                        raise ValueError("label must be 0 or 1")
                    # An archive from an earlier review: it may cover texts this
                    # queue does not hold, which is expected, not an error.
                    matched = by_hash.get(digest, [])
                    if not matched:
                        not_queued += 1
                        continue
                    if matched[0].label != label:
                        # A flip decided for the other label would invert it back.
                        relabelled += 1
                        continue
                else:
                    matched = [items[row["source_id"]]]
                decision, category = row["decision"], row.get("new_category", "") or ""
                if not isinstance(decision, str) or not isinstance(category, str):
                    raise TypeError("decision and new_category must be strings")
            except (json.JSONDecodeError, TypeError, ValueError, KeyError) as err:
                raise CommandError(
                    f"{path}:{number}: expected {{\"source_id\": <a queued item>, \"decision\": "
                    f"...}} or {{\"text_sha256\": ..., \"label\": 0 | 1, \"decision\": ...}} "
                    f"({type(err).__name__}: {err})"
                ) from err
            # Two queued sources with the same text get the same decision.
            parsed += [(number, item, decision, category) for item in matched]
        from django.db import transaction

        # All of the file or none of it.
        with transaction.atomic():
            for number, item, decision, category in parsed:
                try:
                    decide(item=item, decision=decision, new_category=category, user=user)
                except AuditError as err:
                    raise CommandError(f"{path}:{number}: {err} (nothing recorded)") from err
        skipped = ""
        if not_queued or relabelled:
            skipped = (
                f"; skipped {not_queued} for texts not in this queue and "
                f"{relabelled} whose label differs here"
            )
        self.stdout.write(f"{len(parsed)} decisions recorded{skipped}")

    def _print(self, audit: Any) -> None:

        s, r = audit.summary, audit_report(audit)
        self.stdout.write(
            f"{s['generated_suspects']} suspects of {s['generated_sources']} generated sources "
            f"({s['suspects_harmful_label']} labelled harmful, {s['suspects_benign_label']} "
            f"benign, all sources); spot check {s['spot_check']}, reviewed splits "
            f"{s.get('review_split_sources', 0)}"
        )
        self.stdout.write(
            f"decided: suspects {r['suspects']}, spot check {r['spot_check']}; "
            f"suspect precision {r['suspect_precision']}, spot error rate "
            f"{r['spot_error_rate']} {r['spot_error_interval']}"
        )

    def _export(self, audit: Any, path: Path) -> None:
        with path.open("w", encoding="utf-8") as out:
            for item in audit.items.order_by("rank"):
                out.write(json.dumps({
                    "source_id": item.source_id, "text_sha256": text_sha256(item.text),
                    "text": item.text, "label": item.label,
                    "category": item.category, "harm_score": round(item.harm_score, 4),
                    "suspect": item.suspect, "reason": item.reason,
                    "suggested_category": item.suggested_category,
                    "decision": item.decision, "new_category": item.new_category,
                    "wrong_score": item.wrong_score,
                }) + "\n")  # fmt: skip
        self.stdout.write(f"queue written to {path}")

    def _export_decisions(self, audit: Any, path: Path) -> None:
        decided = audit.items.exclude(decision="").order_by("rank")
        with path.open("w", encoding="utf-8") as out:
            for item in decided:
                out.write(json.dumps({
                    "text_sha256": text_sha256(item.text), "label": item.label,
                    "category": item.category, "decision": item.decision,
                    "new_category": item.new_category,
                }) + "\n")  # fmt: skip
        self.stdout.write(f"{decided.count()} decisions written to {path} (texts hashed)")


_SHA256 = re.compile(r"[0-9a-f]{64}")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
