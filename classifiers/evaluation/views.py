"""Evaluation set pages: the list with an import form, and one set's comparison of
every model scored on it, with live progress of the runs under way.

Policy authors import sets and start runs; every role reads.
"""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from classifiers.core.views import cancel_response, progress_response
from classifiers.datasets.forms import saved_upload
from classifiers.evaluation.forms import EvaluationImportForm, EvaluationStartForm
from classifiers.evaluation.services import (
    DEFAULT_GUARD_TOKENS,
    EvaluationError,
    comparison,
    start_evaluation,
)
from classifiers.evaluation.sets import (
    WEB_IMPORT_PROMPTS,
    EvaluationSetError,
    import_evaluation_set,
)
from classifiers.models import EvaluationRun, EvaluationSet
from guardweb.htmx import htmx_partial
from guardweb.roles import POLICY_AUTHOR, get_object_for_role, has_role, require_role


@require_http_methods(["GET", "POST"])
def evaluation_sets(request: HttpRequest) -> HttpResponse:
    require_role(request)
    form = EvaluationImportForm()
    status = 200
    if request.method == "POST":
        require_role(request, POLICY_AUTHOR)
        form = EvaluationImportForm(request.POST, request.FILES)
        if form.is_valid():
            with saved_upload(form.cleaned_data["file"]) as path:
                try:
                    evaluation_set = import_evaluation_set(
                        name=form.cleaned_data["name"], path=path, user=request.user,
                        description=form.cleaned_data["description"], limit=WEB_IMPORT_PROMPTS,
                    )  # fmt: skip
                except EvaluationSetError as err:
                    form.add_error("file", str(err))
                else:
                    stats = evaluation_set.stats
                    messages.success(
                        request,
                        f"{evaluation_set.name}: {stats['prompts']} prompts "
                        f"({stats['harmful']} harmful, {stats['benign']} benign).",
                    )
                    return redirect(evaluation_set)
        status = 400
    sets = EvaluationSet.objects.annotate(
        scored=Count("runs__model_version", filter=Q(runs__status="done"), distinct=True)
    ).select_related("created_by")  # fmt: skip
    return render(
        request,
        "classifiers/evaluation/sets.html",
        {"sets": sets, "form": form, "can_start": has_role(request.user, POLICY_AUTHOR)},
        status=status,
    )


def _set_page(
    request: HttpRequest, evaluation_set: EvaluationSet, *, form: EvaluationStartForm | None = None,
    status: int = 200,
) -> HttpResponse:  # fmt: skip
    EvaluationRun.reap_stale()
    kinds = evaluation_set.stats.get("kinds", {})
    rows = comparison(evaluation_set)
    for row in rows:  # the table's cells in the header's kind order
        per_kind = row["report"].get("per_kind", {})
        row["cells"] = [(kind, kinds[kind], per_kind.get(kind, {})) for kind in kinds]
    # One model's full breakdown below the table: ?model=ID, else the newest.
    chosen = request.GET.get("model", "")
    selected = next((r for r in rows if r["key"] == chosen), rows[0] if rows else None)
    breakdown = []
    if selected:  # per-kind rows, with what stopped them in a whole-guard run
        guard_kinds = selected["report"].get("guard", {}).get("per_kind", {})
        breakdown = [
            (kind, {**row, "guard": guard_kinds.get(kind, {})})
            for kind, row in selected["report"].get("per_kind", {}).items()
        ]
    return render(
        request,
        "classifiers/evaluation/set.html",
        {
            "set": evaluation_set,
            "rows": rows,
            "kinds": kinds,
            "selected": selected,
            "breakdown": breakdown,
            "active_runs": evaluation_set.runs.filter(status__in=("queued", "running"))
            .select_related("model_version__constitution"),
            "recent_runs": evaluation_set.runs.select_related(
                "model_version__constitution", "created_by"
            )[:20],
            "form": form or EvaluationStartForm(),
            "can_start": has_role(request.user, POLICY_AUTHOR),
        },
        status=status,
    )


@require_GET
def evaluation_set(request: HttpRequest, pk: int) -> HttpResponse:
    return _set_page(request, get_object_for_role(request, EvaluationSet, pk=pk))


@require_POST
def evaluation_start(request: HttpRequest, pk: int) -> HttpResponse:
    evaluation_set = get_object_for_role(request, EvaluationSet, POLICY_AUTHOR, pk=pk)
    form = EvaluationStartForm(request.POST)
    if not form.is_valid():
        return _set_page(request, evaluation_set, form=form, status=400)
    try:
        run = start_evaluation(
            evaluation_set=evaluation_set, model_version=form.cleaned_data["model_version"],
            user=request.user, whole_guard=form.cleaned_data["whole_guard"],
            max_new_tokens=form.cleaned_data["max_new_tokens"] or DEFAULT_GUARD_TOKENS,
        )  # fmt: skip
    except EvaluationError as err:
        form.add_error("model_version", str(err))
        return _set_page(request, evaluation_set, form=form, status=400)
    messages.info(request, f"Scoring model #{run.model_version_id} on {evaluation_set.name}.")
    return redirect(evaluation_set)


def _run(request: HttpRequest, pk: int) -> EvaluationRun:
    require_role(request)
    EvaluationRun.reap_stale()
    return get_object_or_404(EvaluationRun.objects.select_related("evaluation_set"), pk=pk)


@require_GET
def evaluation_progress(request: HttpRequest, pk: int) -> HttpResponse:
    return progress_response(request, _run(request, pk))


@require_POST
def evaluation_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run(request, pk)
    require_role(request, POLICY_AUTHOR)
    return cancel_response(request, run, label="evaluation", partial=htmx_partial(request))


urlpatterns = [
    path("evaluation-sets/", evaluation_sets, name="evaluation_sets"),
    path("evaluation-sets/<int:pk>/", evaluation_set, name="evaluation_set"),
    path("evaluation-sets/<int:pk>/score/", evaluation_start, name="evaluation_start"),
    path("evaluations/<int:pk>/progress/", evaluation_progress, name="evaluation_progress"),
    path("evaluations/<int:pk>/cancel/", evaluation_cancel, name="evaluation_cancel"),
]
