"""Label audits: start one on a dataset, watch it, decide its items, apply it.

Policy authors start, cancel and apply audits; reviewers and policy authors decide
items; viewers read. Users with no role get 403.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import F
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from classifiers.audit import report, services
from classifiers.audit.run import AuditError
from classifiers.core.views import cancel_response, progress_response
from classifiers.datasets.forms import AuditStartForm
from classifiers.datasets.views import dataset_page
from classifiers.models import AuditDecision, Dataset, LabelAudit, LabelAuditItem
from guardweb.htmx import htmx_partial
from guardweb.roles import (
    POLICY_AUTHOR,
    REVIEWER,
    get_object_for_role,
    has_role,
    require_role,
)

ITEMS_PER_PAGE = 50
SHOW = {
    "pending": ("Undecided", {"decision": ""}),
    # Undecided, ordered by the model of the decisions so far (learn_order).
    "likely": ("Likely wrong first", {"decision": ""}),
    "suspects": ("Suspects", {"suspect": True}),
    "split": ("Reviewed splits", {"reason": "split"}),
    "spot": ("Spot check", {"reason": "spot_check"}),
    "decided": ("Decided", None),
    "all": ("All", {}),
}


def _can_decide(user: Any) -> bool:
    return has_role(user, POLICY_AUTHOR) or has_role(user, REVIEWER)


def _audit(request: HttpRequest, pk: int) -> LabelAudit:
    require_role(request)
    LabelAudit.reap_stale()
    return get_object_or_404(
        LabelAudit.objects.select_related(
            "dataset__constitution_version__constitution", "applied_dataset", "created_by"
        ),
        pk=pk,
    )


def _category_choices(audit: LabelAudit) -> dict[int, list[str]]:
    """Categories by label, for the flip menu: a harmful item flips to a permitted one."""
    by_label: dict[int, list[str]] = {0: [], 1: []}
    for name, label in report.category_kinds(audit).items():
        by_label[label].append(name)
    return by_label


@require_POST
def audit_start(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_for_role(request, Dataset, POLICY_AUTHOR, pk=pk)
    form = AuditStartForm(request.POST)
    if form.is_valid():
        try:
            audit = services.start_audit(
                dataset=dataset, user=request.user, folds=form.cleaned_data["folds"],
                spot_check=form.cleaned_data["spot_check"],
                review_splits=form.cleaned_data["review_splits"],
            )  # fmt: skip
        except AuditError as err:
            form.add_error(None, str(err))
        else:
            messages.success(request, f"Label audit #{audit.pk} queued.")
            return redirect(audit)

    return dataset_page(request, dataset, audit_form=form, status=400)


def _audit_page(
    request: HttpRequest, audit: LabelAudit, *, status: int = 200, show: str | None = None
) -> HttpResponse:
    show = show or request.GET.get("show", "pending" if audit.status == "done" else "all")
    if show not in SHOW:
        show = "all"
    items = audit.items.select_related("decided_by")
    _, filters = SHOW[show]
    items = items.exclude(decision="") if filters is None else items.filter(**filters)
    if show == "likely":
        items = items.order_by(F("wrong_score").desc(nulls_last=True), "rank")
    page = Paginator(items, ITEMS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "audit": audit,
        "job": audit,
        "dataset": audit.dataset,
        "page": page,
        "show": show,
        "shows": [
            (key, name)
            for key, (name, _) in SHOW.items()
            if key != "likely" or "learned" in (audit.summary or {})
        ],
        "learned": (audit.summary or {}).get("learned"),
        "report": report.audit_report(audit) if audit.status == "done" else None,
        "summary": audit.summary or {},
        "histogram": report.histogram_bars(audit.summary.get("histogram") or {}),
        "can_decide": _can_decide(request.user) and not audit.applied_at,
        "can_apply": has_role(request.user, POLICY_AUTHOR) and not audit.applied_at,
        "categories": _category_choices(audit) if audit.status == "done" else {},
        "decisions": AuditDecision.choices,
    }
    if htmx_partial(request) and request.GET.get("partial") == "items":
        return render(request, "classifiers/datasets/audit.html#items", context)
    return render(request, "classifiers/datasets/audit.html", context, status=status)


@require_GET
def audit_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _audit_page(request, _audit(request, pk))


@require_GET
def audit_progress(request: HttpRequest, pk: int) -> HttpResponse:
    return progress_response(request, _audit(request, pk))


@require_POST
def audit_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    audit = _audit(request, pk)
    require_role(request, POLICY_AUTHOR)
    return cancel_response(request, audit, label="label audit", partial=htmx_partial(request))


@require_POST
def audit_decide(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    audit = _audit(request, pk)
    require_role(request, REVIEWER, POLICY_AUTHOR, message="only reviewers and policy authors decide labels")
    item = get_object_or_404(LabelAuditItem, pk=item_pk, audit=audit)
    error = None
    try:
        item = services.decide(
            item=item, decision=request.POST.get("decision", ""),
            new_category=request.POST.get("new_category", ""), user=request.user,
        )  # fmt: skip
    except AuditError as err:
        error = str(err)
    audit.refresh_from_db()
    show = request.POST.get("show", "pending")
    show = show if show in SHOW else "pending"
    if htmx_partial(request):
        context = {
            "audit": audit, "item": item, "error": error, "show": show,
            "can_decide": not audit.applied_at, "categories": _category_choices(audit),
            "decisions": AuditDecision.choices,
        }  # fmt: skip
        return render(
            request, "classifiers/datasets/_audit_item.html", context, status=400 if error else 200
        )
    if error:
        messages.error(request, error)
        return _audit_page(request, audit, status=400, show=show)
    return redirect(f"{audit.get_absolute_url()}?show={show}")


@require_POST
def audit_learn(request: HttpRequest, pk: int) -> HttpResponse:
    """Order the undecided items by how likely their label is wrong, learned from
    the decisions so far; reviewers and policy authors."""
    audit = _audit(request, pk)
    require_role(request, REVIEWER, POLICY_AUTHOR, message="only reviewers and policy authors order the queue")
    try:
        learned = services.learn_order(audit)
    except AuditError as err:
        messages.error(request, str(err))
        return _audit_page(request, audit, status=400)
    messages.success(
        request,
        f"Ordered {learned['scored']} undecided items by a model of "
        f"{learned['decided']} decisions ({learned['wrong']} label errors).",
    )
    return redirect(f"{audit.get_absolute_url()}?show=likely")


@require_POST
def audit_apply(request: HttpRequest, pk: int) -> HttpResponse:
    audit = _audit(request, pk)
    require_role(request, POLICY_AUTHOR)
    try:
        dataset = services.apply_audit(audit=audit, user=request.user)
    except AuditError as err:
        messages.error(request, str(err))
        return _audit_page(request, audit, status=400)
    messages.success(
        request,
        f"Dataset #{dataset.pk} written with the audit's decisions; train on it to use them.",
    )
    return redirect(dataset)


urlpatterns = [
    path("datasets/<int:pk>/audit/", audit_start, name="label_audit_start"),
    path("audits/<int:pk>/", audit_detail, name="label_audit"),
    path("audits/<int:pk>/progress/", audit_progress, name="label_audit_progress"),
    path("audits/<int:pk>/cancel/", audit_cancel, name="label_audit_cancel"),
    path("audits/<int:pk>/items/<int:item_pk>/", audit_decide, name="label_audit_decide"),
    path("audits/<int:pk>/learn/", audit_learn, name="label_audit_learn"),
    path("audits/<int:pk>/apply/", audit_apply, name="label_audit_apply"),
]
