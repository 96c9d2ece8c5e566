"""The playground page (the chat itself runs over the /ws/playground/ websocket)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET

from guardweb.roles import user_roles


def _require_any_role(request: HttpRequest) -> None:
    if not user_roles(request.user):
        raise PermissionDenied("you need a role (viewer, reviewer or policy author)")


@require_GET
def playground(request: HttpRequest) -> HttpResponse:
    from constitutions.models import Constitution

    from classifiers.models import ActiveModel, GuardPolicy, TrainingRun

    _require_any_role(request)
    active = {}
    for row in ActiveModel.objects.select_related("model_version"):
        active.setdefault(row.constitution_id, {})[row.kind] = row.model_version
    constitutions = []
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
        })  # fmt: skip
    return render(
        request,
        "classifiers/guard/playground.html",
        {"constitutions": constitutions, "conversation_id": request.GET.get("c", "")},
    )


urlpatterns = [path("playground/", playground, name="playground")]
