"""The dataset build task: thin, the work lives in services_datasets.run_dataset."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="classifiers.tasks.generate_dataset", bind=True, acks_late=True)
def generate_dataset(self, dataset_id: int) -> str:  # type: ignore[no-untyped-def]
    from classifiers.services_datasets import run_dataset

    return run_dataset(dataset_id).status


def run_audit_job(audit_pk: int) -> None:
    """Run a queued LabelAudit under a JobRunner (also used by the command)."""
    from classifiers.models import LabelAudit
    from classifiers.progress import JobRunner
    from classifiers.services_audit import execute_audit

    audit = LabelAudit.objects.select_related("dataset__constitution_version").get(pk=audit_pk)
    with JobRunner(audit) as runner:
        if runner.skip:
            return
        execute_audit(
            audit, progress=runner.progress, should_cancel=runner.should_cancel,
            finish=runner.finish,
        )  # fmt: skip


# Embeds every source with the input encoder: model work, so the gpu queue.
@shared_task(name="classifiers.tasks.audit_labels", bind=True, acks_late=True)
def audit_labels(self, audit_pk: int) -> None:  # type: ignore[no-untyped-def]
    run_audit_job(audit_pk)
