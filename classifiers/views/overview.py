from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from guardweb.roles import user_roles


@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    from classifiers.models import ActiveModel, Dataset, TrainingRun

    if not user_roles(request.user):
        raise PermissionDenied("you need a role to see classifiers")
    Dataset.reap_stale()
    TrainingRun.reap_stale()
    context = {
        "datasets": Dataset.objects.select_related("constitution_version__constitution")[:10],
        "runs": TrainingRun.objects.select_related("dataset")[:10],
        "active": ActiveModel.objects.select_related("constitution", "model_version"),
    }
    return render(request, "classifiers/overview.html", context)


urlpatterns = [path("", overview, name="overview")]
