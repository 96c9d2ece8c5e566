"""Responses shared by the pages of every job kind (dataset build, label audit)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from classifiers.models.jobs import Job


def progress_response(request: HttpRequest, job: Job) -> HttpResponse:
    """The polling fallback; 286 tells htmx to stop once the job is over."""
    response = render(request, "classifiers/_job_progress.html", {"job": job})
    if not job.is_active:
        response.status_code = 286
    return response


def cancel_response(request: HttpRequest, job: Job, *, label: str, partial: bool) -> HttpResponse:
    """Ask the worker to stop an active job; the progress fragment or the job's page."""
    if job.is_active:
        job.request_cancel()
        messages.info(request, f"Cancelling {label} #{job.pk}.")
    if partial:
        return render(request, "classifiers/_job_progress.html", {"job": job})
    return redirect(job)
