"""Pages and responses shared by every domain: the classifiers overview and the
progress / cancel answers of any job.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET

from classifiers.models import ActiveModel, Dataset, TrainingRun
from classifiers.models.jobs import Job
from guardweb.htmx import polled_fragment
from guardweb.roles import require_role


def progress_response(request: HttpRequest, job: Job) -> HttpResponse:
    """The polling fallback, until the job is over."""
    return polled_fragment(
        request, "classifiers/_job_progress.html", {"job": job}, done=not job.is_active
    )


def cancel_response(request: HttpRequest, job: Job, *, label: str, partial: bool) -> HttpResponse:
    """Ask the worker to stop an active job; the progress fragment or the job's page."""
    if job.is_active:
        job.request_cancel()
        messages.info(request, f"Cancelling {label} #{job.pk}.")
    if partial:
        return render(request, "classifiers/_job_progress.html", {"job": job})
    return redirect(job)


@require_GET
def overview(request: HttpRequest) -> HttpResponse:

    require_role(request)
    Dataset.reap_stale()
    TrainingRun.reap_stale()
    context = {
        "datasets": Dataset.objects.select_related("constitution_version__constitution")[:10],
        "runs": TrainingRun.objects.select_related("dataset")[:10],
        "active": ActiveModel.objects.select_related("constitution", "model_version"),
    }
    return render(request, "classifiers/overview.html", context)


urlpatterns = [path("", overview, name="overview")]
