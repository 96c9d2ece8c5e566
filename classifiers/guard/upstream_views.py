"""The Upstreams page: OpenAI-compatible models the guard proxies to.

Everyone with a role sees the list (names, models, addresses, which constitutions
use them; never a key). Only operators (staff) add, change or delete upstreams:
they are infrastructure, and a stored key must not follow a URL someone else types.
Policy authors attach them to a constitution on its guard settings page.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods

from classifiers.guard.forms import UpstreamForm
from classifiers.models import Upstream
from guardweb.roles import require_operator, require_role


def _require_operator(request: HttpRequest) -> None:
    require_operator(request, "only operators (staff) add or change upstream models")


@require_http_methods(["GET", "POST"])
def upstream_list(request: HttpRequest) -> HttpResponse:
    require_role(request)
    form = UpstreamForm()
    status = 200
    if request.method == "POST":
        _require_operator(request)
        form = UpstreamForm(request.POST)
        if form.is_valid():
            upstream = form.save_upstream()
            messages.success(request, f"Upstream {upstream.name} added.")
            return redirect("classifiers:upstreams")
        status = 400
    upstreams = Upstream.objects.prefetch_related("policies__constitution")
    return render(request, "classifiers/guard/upstreams.html", {
        "upstreams": upstreams, "form": form, "can_edit": request.user.is_staff,
    }, status=status)  # fmt: skip


@require_http_methods(["GET", "POST"])
def upstream_edit(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request)
    _require_operator(request)
    upstream = get_object_or_404(Upstream, pk=pk)
    form = UpstreamForm(request.POST or None, instance=upstream)
    if request.method == "POST":
        if form.is_valid():
            saved = form.save_upstream()
            messages.success(request, f"Upstream {saved.name} saved.")
            return redirect("classifiers:upstreams")
        return render(request, "classifiers/guard/upstream_edit.html",
                      {"upstream": upstream, "form": form}, status=400)  # fmt: skip
    return render(request, "classifiers/guard/upstream_edit.html", {"upstream": upstream, "form": form})


@require_http_methods(["POST"])
def upstream_delete(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request)
    _require_operator(request)
    upstream = get_object_or_404(Upstream, pk=pk)
    upstream.delete()
    messages.success(request, f"Upstream {upstream.name} deleted; its conversations keep its name.")
    return redirect("classifiers:upstreams")


urlpatterns = [
    path("upstreams/", upstream_list, name="upstreams"),
    path("upstreams/<int:pk>/", upstream_edit, name="upstream-edit"),
    path("upstreams/<int:pk>/delete/", upstream_delete, name="upstream-delete"),
]
