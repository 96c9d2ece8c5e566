"""The lifecycle every long-running record shares: status, progress, cancel, heartbeat."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

# A running job whose worker has not written a heartbeat for this long is dead.
HEARTBEAT_TIMEOUT = timedelta(seconds=90)  # default; settings.JOB_HEARTBEAT_TIMEOUT wins


def heartbeat_timeout() -> timedelta:
    from django.conf import settings

    return timedelta(seconds=getattr(settings, "JOB_HEARTBEAT_TIMEOUT", 90))


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class Job(models.Model):
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.QUEUED)
    stage = models.CharField(max_length=50, blank=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    eta_seconds = models.FloatField(null=True, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Set by subclasses: the websocket group prefix and the task to run.
    job_kind = "job"

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def percent(self) -> int:
        if self.status == JobStatus.DONE:
            return 100
        return int(100 * self.done / self.total) if self.total else 0

    @property
    def group_name(self) -> str:
        return f"job-{self.job_kind}-{self.pk}"

    @property
    def duration(self) -> timedelta | None:
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    def request_cancel(self) -> bool:
        """Ask the worker to stop; a queued job is cancelled at once.

        Conditional updates, so a job that finished meanwhile is left alone.
        """
        model = type(self)
        cancelled_now = model.objects.filter(pk=self.pk, status=JobStatus.QUEUED).update(
            status=JobStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now()
        )
        if not cancelled_now:
            model.objects.filter(pk=self.pk, status=JobStatus.RUNNING).update(
                cancel_requested=True
            )
        self.refresh_from_db()
        return self.cancel_requested

    def mark_failed(self, error: str) -> None:
        type(self).objects.filter(pk=self.pk, status__in=ACTIVE_STATUSES).update(
            status=JobStatus.FAILED, error=error[:5000], finished_at=timezone.now()
        )
        self.refresh_from_db()

    @classmethod
    def reap_stale(cls) -> int:
        """Mark running jobs whose worker stopped heart-beating as failed."""
        timeout = heartbeat_timeout()
        cutoff = timezone.now() - timeout
        reaped = cls.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=cutoff).update(
            status=JobStatus.FAILED,
            error="the worker running this job stopped (killed or crashed); "
            "nothing it produced was kept",
            finished_at=timezone.now(),
        )
        if reaped:
            # A killed worker may have left a half-written artifact folder behind.
            from django.conf import settings

            from classifiers.ml.checkpoints import remove_partial_artifacts

            remove_partial_artifacts(
                settings.ARTIFACTS_DIR, older_than_seconds=timeout.total_seconds()
            )
        return reaped

    def progress_payload(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "percent": self.percent,
            "eta_seconds": self.eta_seconds,
            "error": self.error,
        }
