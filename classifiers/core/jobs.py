"""One runner and one progress feed for every job kind.

`JobRunner` owns a job's lifecycle on the worker (start, heartbeat, progress,
cancel, finish, failure with traceback); `push_job_state` sends the job's progress
fragment to its websocket group. A restarted worker reaps jobs whose worker died.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from celery.signals import worker_ready
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connection
from django.template.loader import render_to_string
from django.utils import timezone

from classifiers.ml.types import Cancelled
from classifiers.models import (
    CascadeCalibration,
    Dataset,
    EvaluationRun,
    LabelAudit,
    TrainingRun,
)
from classifiers.models.jobs import Job, JobStatus

logger = logging.getLogger(__name__)


HEARTBEAT_SECONDS = 10.0


WRITE_EVERY_SECONDS = 0.5  # throttle for row writes and websocket pushes


CANCEL_CHECK_SECONDS = 1.0


def push_job_state(job: Job) -> None:
    """Send the job's progress fragment to everyone watching it."""
    html = render_to_string("classifiers/_job_progress.html", {"job": job, "oob": True})
    layer = get_channel_layer()
    try:
        async_to_sync(layer.group_send)(
            job.group_name, {"type": "job.progress", "html": html, "status": job.status}
        )
    except Exception:  # a Redis hiccup must not kill the job; the row has the state
        logger.warning("could not push progress for %s", job.group_name, exc_info=True)


class JobRunner:
    """Context manager around a job's work in a Celery task.

        with JobRunner(dataset) as runner:
            if runner.skip: return
            ml.build(..., on_progress=runner.progress, should_cancel=runner.should_cancel)
            runner.finish(counts=...)
    """

    def __init__(self, job: Job, *, extra_fields: Callable[[], dict[str, Any]] | None = None):
        self.job = job
        self.skip = False
        self._last_write = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False
        self._stage_started = time.monotonic()
        self._stop_heartbeat = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._extra_fields = extra_fields

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> JobRunner:
        model = type(self.job)
        now = timezone.now()
        # Only a queued job starts; a cancelled one (or a redelivered one that was
        # already reaped as failed) is skipped.
        started = model.objects.filter(pk=self.job.pk, status=JobStatus.QUEUED).update(
            status=JobStatus.RUNNING, started_at=now, heartbeat_at=now,
            worker=socket.gethostname(),
        )  # fmt: skip
        self.job.refresh_from_db()
        if not started:
            self.skip = True
            logger.info("skipping %s: status is %s", self.job, self.job.status)
            return self
        push_job_state(self.job)
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self._heartbeat.start()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        self._stop_heartbeat.set()
        if self._heartbeat:
            self._heartbeat.join(timeout=5)
        if self.skip:
            return False
        model = type(self.job)
        if exc is None:
            if self.job.status == JobStatus.RUNNING:
                # The work ended without finish(): treat as done with what it saved.
                model.objects.filter(pk=self.job.pk, status=JobStatus.RUNNING).update(
                    status=JobStatus.DONE, finished_at=timezone.now()
                )
        elif isinstance(exc, Cancelled):
            model.objects.filter(pk=self.job.pk).update(
                status=JobStatus.CANCELLED, finished_at=timezone.now(), eta_seconds=None
            )
        else:
            summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            logger.error("%s failed", self.job, exc_info=(exc_type, exc, tb))
            model.objects.filter(pk=self.job.pk).update(
                status=JobStatus.FAILED,
                error=summary[:5000],
                finished_at=timezone.now(),
                eta_seconds=None,
            )
        self.job.refresh_from_db()
        push_job_state(self.job)
        # Swallow Cancelled (a normal ending) and failures (recorded on the row):
        # Celery must not retry work that already has a terminal status.
        return True

    def finish(self, **fields: Any) -> None:
        """Mark done, saving result fields in the same UPDATE."""
        model = type(self.job)
        model.objects.filter(pk=self.job.pk).update(
            status=JobStatus.DONE, finished_at=timezone.now(), done=self.job.total,
            eta_seconds=0, **fields,
        )  # fmt: skip
        self.job.refresh_from_db()

    # -- callbacks for the ML core --------------------------------------------------

    def progress(self, *, stage: str, done: int, total: int, **extra: Any) -> None:
        now = time.monotonic()
        if stage != self.job.stage:
            self._stage_started = now
            self.job.stage_started_at = timezone.now()
        self.job.stage, self.job.done, self.job.total = stage, int(done), int(total)
        elapsed = now - self._stage_started
        self.job.eta_seconds = (
            elapsed / done * (total - done) if done and total and done <= total else None
        )
        finished_stage = total and done >= total
        if now - self._last_write < WRITE_EVERY_SECONDS and not finished_stage:
            return
        self._last_write = now
        fields = {
            "stage": self.job.stage, "done": self.job.done, "total": self.job.total,
            "eta_seconds": self.job.eta_seconds, "heartbeat_at": timezone.now(),
            "stage_started_at": self.job.stage_started_at,
        }  # fmt: skip
        if self._extra_fields:
            fields.update(self._extra_fields())
        type(self.job).objects.filter(pk=self.job.pk).update(**fields)
        for name, value in fields.items():
            setattr(self.job, name, value)
        push_job_state(self.job)

    def should_cancel(self) -> bool:
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_CHECK_SECONDS:
            self._last_cancel_check = now
            self._cancelled = (
                type(self.job)
                .objects.filter(pk=self.job.pk, cancel_requested=True)
                .exists()
            )
        return self._cancelled

    def _beat(self) -> None:
        """Heartbeat from a thread, so long steps without progress still look alive."""
        model = type(self.job)
        try:
            interval = getattr(settings, "JOB_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS)
            while not self._stop_heartbeat.wait(interval):
                try:
                    model.objects.filter(
                        pk=self.job.pk, status=JobStatus.RUNNING
                    ).update(heartbeat_at=timezone.now())
                except Exception:  # a database hiccup must not stop the heartbeat
                    logger.warning("heartbeat of %s failed; retrying", self.job)
                    connection.close()
        finally:
            connection.close()  # this thread's own connection
            close_old_connections()


@worker_ready.connect
def reap_jobs_of_dead_workers(**_: object) -> None:
    """A (re)started worker marks jobs whose worker died as failed."""

    Dataset.reap_stale()
    TrainingRun.reap_stale()
    CascadeCalibration.reap_stale()
    LabelAudit.reap_stale()
    EvaluationRun.reap_stale()
