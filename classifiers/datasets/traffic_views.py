"""Traffic pool pages: the list with an upload form, and one pool's counts and prompts."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from classifiers.datasets.forms import (
    ShareGPTImportForm,
    TrafficImportForm,
    saved_upload,
)
from classifiers.datasets.traffic import (
    WEB_IMPORT_PROMPTS,
    TrafficError,
    import_sharegpt,
    import_traffic,
)
from classifiers.models import TrafficPool
from constitutions.models import Constitution
from guardweb.roles import (
    POLICY_AUTHOR,
    REVIEWER,
    get_object_for_role,
    has_role,
    require_role,
)

PROMPTS_PER_PAGE = 50


@require_http_methods(["GET", "POST"])
def traffic_pools(request: HttpRequest) -> HttpResponse:
    require_role(request)
    form = TrafficImportForm()
    status = 200
    if request.method == "POST":
        require_role(request, POLICY_AUTHOR)
        form = TrafficImportForm(request.POST, request.FILES)
        if form.is_valid():
            with saved_upload(form.cleaned_data["file"]) as path:
                try:
                    pool = import_traffic(
                        name=form.cleaned_data["name"], path=path,
                        user=request.user, description=form.cleaned_data["description"],
                        limit=WEB_IMPORT_PROMPTS,
                    )  # fmt: skip
                except TrafficError as err:
                    form.add_error("file", str(err))
                else:
                    last = pool.stats.get("last_import", {})
                    messages.success(
                        request,
                        f"{pool.name}: {last.get('kept', 0)} of {last.get('read', 0)} "
                        "prompts added.",
                    )
                    return redirect(pool)
        status = 400
    return _pools_page(request, form, status=status)


def _pools_page(
    request: HttpRequest, form: TrafficImportForm, *, status: int
) -> HttpResponse:
    # Constitutions with shadow-mode conversations, for the "from shadow traffic" form.
    shadowed = (
        Constitution.objects.filter(conversations__mode="shadow")
        .annotate(shadow_conversations=Count("conversations"))
        .order_by("slug")
    )
    return render(
        request,
        "classifiers/datasets/traffic.html",
        {
            "pools": TrafficPool.objects.all(),
            "form": form,
            "shadowed": shadowed,
            "can_start": has_role(request.user, POLICY_AUTHOR),
            "sharegpt_form": ShareGPTImportForm(),
        },
        status=status,
    )


@require_POST
def traffic_from_sharegpt(request: HttpRequest) -> HttpResponse:
    """Real everyday traffic in one action: opening messages users shared from
    ChatGPT, with their replies (datasets/traffic.py import_sharegpt)."""
    require_role(request, POLICY_AUTHOR)
    form = ShareGPTImportForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            for error in errors:
                messages.error(request, f"Real everyday traffic: {field}: {error}")
        return _pools_page(request, TrafficImportForm(), status=400)
    try:
        pool = import_sharegpt(
            name=form.cleaned_data["name"],
            user=request.user,
            limit=form.cleaned_data["count"],
        )
    except TrafficError as err:
        messages.error(request, str(err))
        return redirect("classifiers:traffic_pools")
    last = pool.stats.get("last_import", {})
    messages.success(
        request,
        f"{pool.name}: {last.get('kept', 0)} of {last.get('read', 0)} real messages added.",
    )
    return redirect(pool)


@require_GET
def traffic_pool(request: HttpRequest, pk: int) -> HttpResponse:
    pool = get_object_for_role(request, TrafficPool, pk=pk)
    if pool.source == TrafficPool.Source.SHADOW:
        # Users' own messages: readable by those who may read the review queue.
        require_role(request, REVIEWER, POLICY_AUTHOR,
                     message="shadow traffic pools hold users' messages: reviewers and "
                     "policy authors only")  # fmt: skip
    prompts = pool.prompts.order_by("id")
    split = request.GET.get("split")
    if split:
        prompts = prompts.filter(split=split)
    page = Paginator(prompts, PROMPTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "classifiers/datasets/traffic_pool.html",
        {"pool": pool, "page": page, "split": split,
         "can_start": has_role(request.user, POLICY_AUTHOR)},  # fmt: skip
    )


urlpatterns = [
    path("traffic/", traffic_pools, name="traffic_pools"),
    path("traffic/<int:pk>/", traffic_pool, name="traffic_pool"),
    path("traffic/from-sharegpt/", traffic_from_sharegpt, name="traffic_from_sharegpt"),
]
