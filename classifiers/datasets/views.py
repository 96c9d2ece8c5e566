"""Synthetic datasets: generator endpoints, starting a build, watching it, browsing.

Policy authors start, cancel and manage endpoints; reviewers and viewers read;
users with no role get 403 everywhere here.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from classifiers.core.views import cancel_response, progress_response
from classifiers.datasets import services
from classifiers.datasets.combine import CombineError, combine_datasets, order_parts
from classifiers.datasets.config import StartError
from classifiers.datasets.export import EXPORT_FORMATS, category_bars, export_dataset
from classifiers.datasets.forms import (
    AuditStartForm,
    DatasetStartForm,
    EndpointForm,
    ExampleFilterForm,
)
from classifiers.datasets.generators import check_endpoint
from classifiers.datasets.lineage import combined_from
from classifiers.models import Dataset, GeneratorEndpoint, JailbreakTemplate
from guardweb.htmx import htmx_partial
from guardweb.roles import (
    POLICY_AUTHOR,
    get_object_for_role,
    has_role,
    require_operator,
    require_role,
)

EXAMPLES_PER_PAGE = 20

# -------------------------------------------------------------------- permissions


def _dataset(request: HttpRequest, pk: int) -> Dataset:
    require_role(request)
    Dataset.reap_stale()
    return get_object_or_404(
        Dataset.objects.select_related(
            "constitution_version__constitution", "endpoint", "created_by"
        ),
        pk=pk,
    )


# ----------------------------------------------------------------------- datasets


@require_GET
def dataset_list(request: HttpRequest) -> HttpResponse:
    require_role(request)
    return _list_page(request)


def _list_page(
    request: HttpRequest, *, combine_error: str = "", chosen: tuple[int, ...] = (),
    status: int = 200,
) -> HttpResponse:
    """The datasets list; also re-rendered (400) when combining failed."""
    Dataset.reap_stale()
    datasets = Dataset.objects.select_related(
        "constitution_version__constitution", "created_by"
    )
    return render(
        request,
        "classifiers/datasets/list.html",
        {
            "datasets": datasets[:200],
            "can_start": has_role(request.user, POLICY_AUTHOR),
            "combine_error": combine_error,
            "chosen": chosen,
        },
        status=status,
    )


@require_POST
def dataset_combine(request: HttpRequest) -> HttpResponse:
    """Pool the ticked datasets (one constitution version) into a new dataset."""
    require_role(request, POLICY_AUTHOR)
    raw = request.POST.getlist("datasets")
    if not all(value.isascii() and value.isdecimal() for value in raw):
        return _list_page(request, combine_error="choose datasets from the list", status=400)
    ids = tuple(sorted({int(value) for value in raw}))
    found = {d.pk: d for d in Dataset.objects.filter(pk__in=ids)}
    missing = [pk for pk in ids if pk not in found]
    try:
        if missing:
            raise CombineError(f"no dataset {', '.join(f'#{pk}' for pk in missing)}")
        parts = order_parts(list(found.values()))  # reviewed first: it wins repeats
        combined = combine_datasets(datasets=parts, user=request.user)
    except CombineError as err:
        return _list_page(request, combine_error=str(err), chosen=ids, status=400)
    info = combined.config["combined"]
    messages.success(
        request,
        f"Dataset #{combined.pk} combines {', '.join(f'#{d.pk}' for d in parts)}: "
        f"{combined.counts['total']} examples; {info['duplicate_sources']} repeated "
        "source queries left out.",
    )
    return redirect(combined)


@require_http_methods(["GET", "POST"])
def dataset_new(request: HttpRequest) -> HttpResponse:
    require_role(request)
    if request.method == "POST":
        require_role(request, POLICY_AUTHOR)
        form = DatasetStartForm(request.POST)
        if form.is_valid():
            try:
                dataset = services.dataset_start(
                    version=form.cleaned_data["version"],
                    config=form.config,
                    endpoint=form.endpoint,
                    user=request.user,
                )
            except StartError as err:
                form.add_error(None, str(err))
            else:
                messages.success(request, f"Dataset #{dataset.pk} queued.")
                return redirect(dataset)
        return render(
            request,
            "classifiers/datasets/new.html",
            {"form": form, "can_start": True},
            status=400,
        )
    initial: dict[str, Any] = {}
    if request.GET.get("version"):
        initial["version"] = request.GET["version"]
    return render(
        request,
        "classifiers/datasets/new.html",
        {
            "form": DatasetStartForm(initial=initial),
            "can_start": has_role(request.user, POLICY_AUTHOR),
        },
    )


@require_GET
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return dataset_page(request, _dataset(request, pk))


def dataset_page(
    request: HttpRequest, dataset: Dataset, *, audit_form: Any = None, status: int = 200
) -> HttpResponse:
    """The dataset page; also re-rendered (400) when starting an audit failed."""
    filters = ExampleFilterForm(request.GET or None, dataset=dataset)
    examples = filters.filter(dataset.examples.all())
    page = Paginator(examples, EXAMPLES_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "dataset": dataset,
        "job": dataset,
        "filters": filters,
        "page": page,
        "query": query.urlencode(),
        "can_start": has_role(request.user, POLICY_AUTHOR),
    }
    if htmx_partial(request) and status == 200:
        return render(request, "classifiers/datasets/detail.html#examples", context)
    bars = category_bars(dataset)
    context.update(
        bars=bars,
        bars_height=28 * len(bars) + 4,
        counts=dataset.counts or {},
        config=dataset.config or {},
        audits=dataset.audits.select_related("applied_dataset")[:10],
        audited_from=getattr(dataset, "audited_from", None),
        combined_parts=combined_from(dataset),
        audit_form=audit_form or AuditStartForm(),
    )
    return render(request, "classifiers/datasets/detail.html", context, status=status)


@require_GET
def dataset_progress(request: HttpRequest, pk: int) -> HttpResponse:
    return progress_response(request, _dataset(request, pk))


@require_POST
def dataset_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _dataset(request, pk)
    require_role(request, POLICY_AUTHOR)
    return cancel_response(request, dataset, label="dataset", partial=htmx_partial(request))


@require_GET
def dataset_example(request: HttpRequest, pk: int, example_pk: int) -> HttpResponse:
    dataset = _dataset(request, pk)
    example = get_object_or_404(dataset.examples, pk=example_pk)
    context = {"dataset": dataset, "example": example}
    if htmx_partial(request):
        return render(
            request, "classifiers/datasets/example.html#conversation", context
        )
    return render(request, "classifiers/datasets/example.html", context)


@require_GET
def dataset_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponseBase:
    dataset = _dataset(request, pk)
    if fmt not in EXPORT_FORMATS:
        return HttpResponse("unknown export format", status=404)
    file_path = export_dataset(dataset, fmt)
    handle = open(file_path, "rb")  # noqa: SIM115 - FileResponse closes it
    os.unlink(file_path)  # the open handle keeps the data until the download ends
    return FileResponse(
        handle,
        as_attachment=True,
        filename=f"{dataset.constitution_version.constitution.slug}"
        f"-v{dataset.constitution_version.number}-dataset-{dataset.pk}.{fmt}",
        content_type=EXPORT_FORMATS[fmt],
    )


@require_GET
def template_list(request: HttpRequest) -> HttpResponse:
    require_role(request)
    templates = JailbreakTemplate.objects.select_related("dataset")
    source = request.GET.get("source")
    if source in ("seed", "generated"):
        templates = templates.filter(source=source)
    return render(
        request,
        "classifiers/datasets/templates.html",
        {"templates": templates[:500], "source": source},
    )


# ---------------------------------------------------------------------- endpoints


def _require_operator(request: HttpRequest) -> None:
    """Endpoints are infrastructure (#26 item 5): operators (staff) add, change,
    delete and test them; policy authors pick one when they start a dataset."""
    require_operator(request, "only operators (staff) add, change or test endpoints")


@require_http_methods(["GET", "POST"])
def endpoint_list(request: HttpRequest) -> HttpResponse:
    require_role(request)
    form = EndpointForm()
    status = 200
    if request.method == "POST":
        _require_operator(request)
        form = EndpointForm(request.POST)
        if form.is_valid():
            endpoint = form.save()
            messages.success(request, f"Endpoint {endpoint.name} added.")
            return redirect("classifiers:endpoints")
        status = 400
    return render(
        request,
        "classifiers/datasets/endpoints.html",
        {
            "endpoints": GeneratorEndpoint.objects.order_by("name"),
            "form": form,
            "can_edit": request.user.is_staff,
            "can_start": has_role(request.user, POLICY_AUTHOR),
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
def endpoint_edit(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = get_object_for_role(request, GeneratorEndpoint, pk=pk)
    _require_operator(request)
    form = EndpointForm(instance=endpoint)
    status = 200
    if request.method == "POST":
        form = EndpointForm(request.POST, instance=endpoint)
        if form.is_valid():
            form.save()
            messages.success(request, f"Endpoint {endpoint.name} saved.")
            return redirect("classifiers:endpoints")
        status = 400
    return render(
        request,
        "classifiers/datasets/endpoint_edit.html",
        {
            "endpoint": endpoint,
            "form": form,
            "can_edit": True,
            "can_start": has_role(request.user, POLICY_AUTHOR),
        },
        status=status,
    )


@require_POST
def endpoint_delete(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = get_object_for_role(request, GeneratorEndpoint, pk=pk)
    _require_operator(request)
    endpoint.delete()
    messages.success(request, f"Endpoint {endpoint.name} deleted.")
    return redirect("classifiers:endpoints")


@require_POST
def endpoint_test(request: HttpRequest, pk: int) -> HttpResponse:
    endpoint = get_object_for_role(request, GeneratorEndpoint, pk=pk)
    _require_operator(request)
    result = check_endpoint(endpoint)
    context = {"endpoint": endpoint, "result": result}
    if htmx_partial(request):
        return render(
            request, "classifiers/datasets/endpoints.html#test-result", context
        )
    if result == "ok":
        messages.success(request, f"{endpoint.name}: ok")
    else:
        messages.error(request, f"{endpoint.name}: {result}")
    return redirect("classifiers:endpoints")


urlpatterns = [
    path("datasets/", dataset_list, name="datasets"),
    path("datasets/new/", dataset_new, name="dataset_new"),
    path("datasets/combine/", dataset_combine, name="dataset_combine"),
    path("datasets/templates/", template_list, name="jailbreak_templates"),
    path("datasets/<int:pk>/", dataset_detail, name="dataset"),
    path("datasets/<int:pk>/progress/", dataset_progress, name="dataset_progress"),
    path("datasets/<int:pk>/cancel/", dataset_cancel, name="dataset_cancel"),
    path(
        "datasets/<int:pk>/examples/<int:example_pk>/",
        dataset_example,
        name="dataset_example",
    ),
    path("datasets/<int:pk>/export.<str:fmt>", dataset_export, name="dataset_export"),
    path("endpoints/", endpoint_list, name="endpoints"),
    path("endpoints/<int:pk>/", endpoint_edit, name="endpoint_edit"),
    path("endpoints/<int:pk>/delete/", endpoint_delete, name="endpoint_delete"),
    path("endpoints/<int:pk>/test/", endpoint_test, name="endpoint_test"),
]
