"""One action: a constitution's shadow-mode traffic becomes a traffic pool (the form
is on the traffic pools page; see review/shadow_pool.py for the labels)."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect
from django.urls import path
from django.views.decorators.http import require_POST

from classifiers.datasets.traffic import TrafficError
from classifiers.review.shadow_pool import pool_from_shadow
from constitutions.models import Constitution
from guardweb.roles import POLICY_AUTHOR, require_role


@require_POST
def shadow_pool(request: HttpRequest) -> HttpResponse:
    require_role(request, POLICY_AUTHOR)  # and reading the pool: see traffic_pool
    constitution = Constitution.objects.filter(slug=request.POST.get("constitution", "")).first()
    if constitution is None:
        return HttpResponseBadRequest("Choose a constitution with shadow-mode traffic.")
    name = request.POST.get("name", "").strip() or f"shadow: {constitution.slug}"
    if len(name) > 100 or "\x00" in name:
        return HttpResponseBadRequest(
            "Give the pool a name of at most 100 characters, without NUL characters."
        )
    try:
        pool, counts = pool_from_shadow(constitution=constitution, name=name, user=request.user)
    except TrafficError as err:
        messages.error(request, str(err))
        return redirect("classifiers:traffic_pools")
    last = pool.stats.get("last_import", {})
    left_out = counts.get("left out: flagged, not decided", 0)
    messages.success(
        request,
        f"{pool.name}: {last.get('kept', 0)} prompts added from {counts.get('used', 0)} "
        f"shadow conversations" + (f"; {left_out} flagged ones wait for review" if left_out else ""),
    )
    return redirect(pool)


urlpatterns = [path("traffic/from-shadow/", shadow_pool, name="traffic_from_shadow")]
