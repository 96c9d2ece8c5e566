"""The label-audit task: thin, the work lives in audit.run."""

from __future__ import annotations

from celery import shared_task

from classifiers.audit.run import run_audit_job


# Embeds every source with the input encoder: model work, so the gpu queue.
@shared_task(name="classifiers.tasks.audit_labels", bind=True, acks_late=True)
def audit_labels(self, audit_pk: int) -> None:  # type: ignore[no-untyped-def]
    run_audit_job(audit_pk)
