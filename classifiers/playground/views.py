"""The playground page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from classifiers.models import ActiveModel, GuardPolicy, TrainingRun
from constitutions.models import Constitution
from guardweb.roles import require_role


@require_GET
def playground(request: HttpRequest) -> HttpResponse:

    require_role(request)
    active = {}
    for row in ActiveModel.objects.select_related("model_version"):
        active.setdefault(row.constitution_id, {})[row.kind] = row.model_version
    constitutions = []
    upstreams: dict[int, list[str]] = {}
    for policy in GuardPolicy.objects.prefetch_related("upstreams"):
        upstreams[policy.constitution_id] = [u.name for u in policy.upstreams.all()]
    for constitution in Constitution.objects.order_by("name"):
        runs = (
            TrainingRun.objects.filter(
                dataset__constitution_version__constitution=constitution, status="done"
            )
            .order_by("-created_at")[:10]
        )
        constitutions.append({
            "slug": constitution.slug,
            "name": constitution.name,
            "active": active.get(constitution.pk, {}),
            "mode": GuardPolicy.for_constitution(constitution).mode,
            "runs": runs,
            "upstreams": upstreams.get(constitution.pk, []),
        })  # fmt: skip
    return render(
        request,
        "classifiers/guard/playground.html",
        {"constitutions": constitutions, "conversation_id": request.GET.get("c", "")},
    )


urlpatterns = [path("playground/", playground, name="playground")]
