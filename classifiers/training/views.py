"""Training runs, the model registry, evaluation reports, activation and rollback."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from classifiers.datasets.lineage import label_provenance
from classifiers.models import ActiveModel, Dataset, ModelVersion, TrainingRun
from classifiers.training.config import TrainingError
from classifiers.training.forms import TrainingForm
from classifiers.training.registry import activate_model
from classifiers.training.services import corrected_training_prompts, training_start
from guardweb.htmx import htmx_partial, polled_fragment
from guardweb.roles import POLICY_AUTHOR, has_role, require_role

# ----------------------------------------------------------------------- permissions


def _run_for(request: HttpRequest, pk: int, *, write: bool = False) -> TrainingRun:
    require_role(request, *((POLICY_AUTHOR,) if write else ()))
    return get_object_or_404(
        TrainingRun.objects.select_related("dataset__constitution_version__constitution"),
        pk=pk,
    )


def _model_for(request: HttpRequest, pk: int, *, write: bool = False) -> ModelVersion:
    require_role(request, *((POLICY_AUTHOR,) if write else ()))
    return get_object_or_404(
        ModelVersion.objects.select_related(
            "constitution", "constitution_version", "dataset", "training_run"
        ),
        pk=pk,
    )


# ---------------------------------------------------------------------- training


@require_http_methods(["GET", "POST"])
def training_new(request: HttpRequest, dataset_pk: int) -> HttpResponse:

    if request.method == "POST":
        require_role(request, POLICY_AUTHOR)
    else:
        require_role(request)
    dataset = get_object_or_404(
        Dataset.objects.select_related("constitution_version__constitution"), pk=dataset_pk
    )
    form = TrainingForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            run = training_start(
                dataset=dataset, config=form.cleaned_data["config"], user=request.user,
                activate_when_done=form.cleaned_data["activate_when_done"],
            )  # fmt: skip
        except TrainingError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Training run #{run.pk} queued.")
            return redirect(run.get_absolute_url())
    status = 400 if request.method == "POST" else 200
    return render(
        request, "classifiers/training/new.html",
        {"form": form, "dataset": dataset, "can_write": has_role(request.user, POLICY_AUTHOR),
         "corrected": corrected_training_prompts(dataset)},
        status=status,
    )  # fmt: skip


def _run_context(request: HttpRequest, run: TrainingRun) -> dict[str, Any]:
    return {
        "job": run,
        "run": run,
        "models": list(run.model_versions.order_by("kind")),
        "can_write": has_role(request.user, POLICY_AUTHOR),
    }


@require_GET
def training_detail(request: HttpRequest, pk: int) -> HttpResponse:
    TrainingRun.reap_stale()
    run = _run_for(request, pk)
    return render(request, "classifiers/training/detail.html", _run_context(request, run))


@require_GET
def training_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The polling fallback, until the run is over."""
    TrainingRun.reap_stale()
    run = _run_for(request, pk)
    return polled_fragment(
        request, "classifiers/training/detail.html#status", _run_context(request, run),
        done=not run.is_active,
    )  # fmt: skip


@require_GET
def training_history(request: HttpRequest, pk: int) -> JsonResponse:
    run = _run_for(request, pk)
    return JsonResponse({
        "status": run.status, "stage": run.stage, "history": run.history or {},
    })  # fmt: skip


@require_POST
def training_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run_for(request, pk, write=True)
    run.request_cancel()
    if htmx_partial(request):
        return render(
            request, "classifiers/training/detail.html#status", _run_context(request, run)
        )
    messages.info(request, f"Cancel requested for run #{run.pk}.")
    return redirect(run.get_absolute_url())


# ------------------------------------------------------------------------ models


@require_GET
def model_list(request: HttpRequest) -> HttpResponse:
    require_role(request)
    TrainingRun.reap_stale()
    active_ids = set(ActiveModel.objects.values_list("model_version_id", flat=True))
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for model in ModelVersion.objects.select_related("constitution", "dataset").order_by(
        "constitution__name", "kind", "-created_at"
    ):
        key = (model.constitution.name, model.kind)
        group = groups.setdefault(key, {
            "constitution": model.constitution, "kind": model.get_kind_display(),
            "models": [],
        })  # fmt: skip
        group["models"].append(model)
    context = {
        "groups": list(groups.values()),
        "active_ids": active_ids,
        "runs": TrainingRun.objects.select_related("dataset")[:10],
        "can_write": has_role(request.user, POLICY_AUTHOR),
    }
    return render(request, "classifiers/training/models.html", context)


def _model_context(request: HttpRequest, model: ModelVersion) -> dict[str, Any]:

    others = ModelVersion.objects.filter(
        constitution=model.constitution, kind=model.kind
    ).exclude(pk=model.pk)
    return {
        "model": model,
        "is_active": model.is_active(),
        "active": ActiveModel.objects.filter(
            constitution=model.constitution, kind=model.kind
        ).select_related("model_version", "activated_by").first(),
        "others": others,
        "splits": model.report.get("splits", {}),
        "can_write": has_role(request.user, POLICY_AUTHOR),
        "labels": label_provenance(model.dataset),
    }


@require_GET
def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    model = _model_for(request, pk)
    return render(request, "classifiers/training/model.html", _model_context(request, model))


@require_GET
def model_report(request: HttpRequest, pk: int) -> HttpResponse:
    """The full evaluation report as a JSON download."""

    model = _model_for(request, pk)
    document = {
        "model": model.pk, "kind": model.kind, "constitution": model.constitution.slug,
        "constitution_version": model.constitution_version.number,
        "dataset": model.dataset_id, "training_run": model.training_run_id,
        "checksum": model.checksum, "code_version": model.code_version,
        "created_at": model.created_at.isoformat(), "thresholds": model.thresholds,
        "metrics": model.metrics, "report": model.report,
        "labels": label_provenance(model.dataset),
    }  # fmt: skip
    response = HttpResponse(
        json.dumps(document, indent=2), content_type="application/json"
    )
    filename = f"{model.constitution.slug}-{model.kind}-{model.pk}-report.json"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_POST
def model_activate(request: HttpRequest, pk: int) -> HttpResponse:

    model = _model_for(request, pk, write=True)
    activate_model(model_version=model, user=request.user)
    if htmx_partial(request):
        return render(
            request, "classifiers/training/model.html#activation",
            _model_context(request, model),
        )  # fmt: skip
    messages.success(request, f"Model #{model.pk} is now live.")
    return redirect(model.get_absolute_url())


@require_GET
def model_compare(request: HttpRequest) -> HttpResponse:
    from classifiers.ml.eval.evaluate import compare_reports

    require_role(request)
    try:
        a_pk, b_pk = int(request.GET.get("a", "")), int(request.GET.get("b", ""))
    except ValueError as exc:
        raise Http404("give two model ids as ?a=..&b=..") from exc
    a = _model_for(request, a_pk)
    b = _model_for(request, b_pk)
    split = request.GET.get("split", "test")
    if split not in ("test", "heldout_transforms"):
        split = "test"

    def classifier_report(model: ModelVersion) -> dict[str, Any]:
        return model.report.get("splits", {}).get(split, {}).get("classifier", {})

    comparison = compare_reports(classifier_report(a), classifier_report(b))
    return render(request, "classifiers/training/compare.html", {
        "a": a, "b": b, "split": split, "comparison": comparison,
        "curves": {"a": classifier_report(a).get("roc"), "b": classifier_report(b).get("roc")},
    })  # fmt: skip


urlpatterns = [
    path("datasets/<int:dataset_pk>/train/", training_new, name="training_new"),
    path("training/<int:pk>/", training_detail, name="training"),
    path("training/<int:pk>/progress/", training_progress, name="training_progress"),
    path("training/<int:pk>/history.json", training_history, name="training_history"),
    path("training/<int:pk>/cancel/", training_cancel, name="training_cancel"),
    path("models/", model_list, name="models"),
    path("models/compare/", model_compare, name="model_compare"),
    path("models/<int:pk>/", model_detail, name="model"),
    path("models/<int:pk>/report.json", model_report, name="model_report"),
    path("models/<int:pk>/activate/", model_activate, name="model_activate"),
]
