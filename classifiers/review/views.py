"""The review queue, item pages, decisions (one or bulk), exports and feedback.

Reviewers (and admins) claim, assign and decide; policy authors read the queue and
curate the feedback examples (and retrain with them); viewers and users with no
role get 403 on everything here. Conflicting changes answer 409 with the reason.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import Count, OuterRef, Q, Subquery
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST

from classifiers.models import (
    Conversation,
    Dataset,
    Decision,
    FeedbackExample,
    ReviewItem,
    ReviewStatus,
    TrainingRun,
    Turn,
)
from classifiers.review import services
from classifiers.review.feedback import (
    RetrainError,
    remove_feedback,
    retrain_with_feedback,
)
from constitutions.models import Constitution
from guardweb.htmx import htmx_partial
from guardweb.roles import (
    POLICY_AUTHOR,
    REVIEWER,
    get_object_for_role,
    has_role,
    require_role,
)

ITEMS_PER_PAGE = 25
DECISION_KEYS = {str(i + 1): value for i, value in enumerate(Decision.values)}

# -------------------------------------------------------------------- permissions


def _item(request: HttpRequest, pk: int) -> ReviewItem:
    require_role(request, REVIEWER, POLICY_AUTHOR)
    return get_object_or_404(
        ReviewItem.objects.select_related(
            "conversation__constitution", "conversation__user", "assignee", "decided_by"
        ),
        pk=pk,
    )


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


# -------------------------------------------------------------------------- forms


def _reviewers() -> Any:
    users = get_user_model().objects.filter(is_active=True)
    return users.filter(Q(groups__name=REVIEWER) | Q(is_superuser=True)).distinct().order_by(
        "username"
    )


class QueueFilter(forms.Form):
    constitution = forms.ModelChoiceField(queryset=None, required=False, empty_label="All")
    category = forms.ChoiceField(required=False)
    reason = forms.ChoiceField(
        choices=[("", "All")] + list(Conversation.FlagReason.choices), required=False
    )
    status = forms.ChoiceField(
        choices=[("undecided", "Open or claimed"), ("", "All")] + list(ReviewStatus.choices),
        required=False,
        initial="undecided",
    )
    decision = forms.ChoiceField(choices=[("", "All")] + list(Decision.choices), required=False)
    assignee = forms.ModelChoiceField(queryset=None, required=False, empty_label="Anyone")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    sort = forms.ChoiceField(
        choices=[("score", "Highest score"), ("-score", "Lowest score"),
                 ("age", "Oldest first"), ("-age", "Newest first")],  # fmt: skip
        required=False,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:

        super().__init__(*args, **kwargs)
        self.fields["constitution"].queryset = Constitution.objects.order_by("name")
        self.fields["assignee"].queryset = _reviewers()
        categories = (
            ReviewItem.objects.exclude(category="")
            .values_list("category", flat=True)
            .distinct()
            .order_by("category")
        )
        self.fields["category"].choices = [("", "All")] + [(c, c) for c in categories]

    def filters(self) -> dict[str, Any]:
        if not self.is_bound:
            return {"status": "undecided"}
        if not self.is_valid():
            return {"status": "undecided"}
        data = dict(self.cleaned_data)
        return data


def _queue(filters: dict[str, Any]) -> Any:
    status = filters.get("status")
    items = services.queue_items({**filters, "status": "" if status == "undecided" else status})
    if status == "undecided":
        items = items.exclude(status=ReviewStatus.DECIDED)
    first = Turn.objects.filter(
        conversation=OuterRef("conversation"), variant=Turn.Variant.GUARDED
    ).order_by("index")
    return items.annotate(first_message=Subquery(first.values("user_content")[:1]))


# -------------------------------------------------------------------------- queue


def _queue_context(request: HttpRequest, data: Any) -> dict[str, Any]:
    form = QueueFilter(data if any(k != "page" for k in data) else None)
    items = _queue(form.filters())
    page = Paginator(items, ITEMS_PER_PAGE).get_page(data.get("page"))
    for item in page:
        item.score_bg = token_colour(item.conversation.max_score)
    query = data.copy()
    for key in ("page", "csrfmiddlewaretoken", "ids", "decision_bulk", "note"):
        query.pop(key, None)
    return {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "can_decide": has_role(request.user, REVIEWER),
        "decisions": Decision.choices,
        "decision_keys": DECISION_KEYS,
    }


@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    require_role(request, REVIEWER, POLICY_AUTHOR)
    services.backfill_review_items()
    context = _queue_context(request, request.GET)
    status = 400 if context["form"].is_bound and not context["form"].is_valid() else 200
    template = "classifiers/review/queue.html"
    if htmx_partial(request):
        template += "#table"
    return render(request, template, context, status=status)


@require_POST
def bulk(request: HttpRequest) -> HttpResponse:
    require_role(request, REVIEWER)
    decision = request.POST.get("decision_bulk", "")
    try:
        ids = [int(v) for v in request.POST.getlist("ids")]
    except ValueError:
        return HttpResponse("item ids must be numbers", status=400)
    if decision not in Decision.values:
        return HttpResponse("choose a decision", status=400)
    if not ids:
        return HttpResponse("select at least one item", status=400)
    decided, conflicts = services.bulk_decide(
        item_ids=ids, user=request.user, decision=decision, note=request.POST.get("note", "")
    )
    context = _queue_context(request, request.POST)
    context["bulk_result"] = {"decided": decided, "conflicts": conflicts}
    if htmx_partial(request):
        return render(request, "classifiers/review/queue.html#table", context)
    if decided:
        messages.success(request, f"Decided {len(decided)} item(s).")
    for conflict in conflicts:
        messages.error(request, conflict)
    return redirect(reverse("classifiers:review") + "?" + context["query"])


# --------------------------------------------------------------------------- item


def token_colour(score: float | None) -> str:
    """The playground's scale (static/js/playground.js colour()): white → amber → red."""
    if score is None:
        return "transparent"
    s = max(0.0, min(1.0, float(score)))
    return f"hsla({45 - 45 * s:.1f}, 95%, 55%, {0.08 + 0.72 * s:.3f})"


def _turn_view(turn: Turn) -> dict[str, Any]:
    tokens = []
    for i, pair in enumerate(turn.token_scores or []):
        text, score = (pair + [None, None])[:2] if isinstance(pair, list) else (str(pair), None)
        tokens.append({
            "text": text, "score": score, "bg": token_colour(score),
            "halt": turn.halted_at is not None and i == turn.halted_at,
        })  # fmt: skip
    return {"turn": turn, "tokens": tokens}


def _neighbours(item: ReviewItem) -> tuple[int | None, int | None]:
    """Previous and next undecided items in the default queue order (for j/k)."""
    ids = list(
        services.queue_items({}).exclude(status=ReviewStatus.DECIDED).values_list("pk", flat=True)[:2000]
    )
    if item.pk not in ids:
        return None, ids[0] if ids else None
    i = ids.index(item.pk)
    return (ids[i - 1] if i > 0 else None), (ids[i + 1] if i + 1 < len(ids) else None)


def _panel_context(request: HttpRequest, item: ReviewItem, **extra: Any) -> dict[str, Any]:
    return {
        "item": item,
        "can_decide": has_role(request.user, REVIEWER),
        "decisions": Decision.choices,
        "decision_keys": DECISION_KEYS,
        "reviewers": _reviewers(),
        "feedback": item.feedback.filter(active=True).first(),
        **extra,
    }


@require_GET
def item_detail(request: HttpRequest, pk: int) -> HttpResponse:
    item = _item(request, pk)
    conversation = item.conversation
    turns = conversation.turns.order_by("index", "variant")
    previous, following = _neighbours(item)
    context = _panel_context(
        request, item,
        conversation=conversation,
        turns=[_turn_view(t) for t in turns],
        previous_id=previous, next_id=following,
    )  # fmt: skip
    return render(request, "classifiers/review/item.html", context)


def _answer(
    request: HttpRequest, item_id: int, *, error: str = "", message: str = ""
) -> HttpResponse:
    """The item's panel (htmx), JSON (review.js on the queue) or a redirect."""
    status = 409 if error else 200
    item = _item(request, item_id)
    if _wants_json(request):
        return JsonResponse(
            {"ok": not error, "message": error or message, "status": item.status,
             "decision": item.decision, "version": item.version,
             "assignee": item.assignee.username if item.assignee else None},  # fmt: skip
            status=status,
        )
    if htmx_partial(request):
        context = _panel_context(request, item, error=error, message=message)
        return render(request, "classifiers/review/_panel.html", context, status=status)
    if error:
        messages.error(request, error)
    elif message:
        messages.success(request, message)
    return redirect(item)


@require_POST
def claim(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, REVIEWER)
    item = _item(request, pk)
    try:
        services.claim(item_id=item.pk, user=request.user)
    except services.Conflict as err:
        return _answer(request, pk, error=str(err))
    return _answer(request, pk, message=f"You claimed item #{pk}.")


@require_POST
def release(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, REVIEWER)
    item = _item(request, pk)
    try:
        services.release(item_id=item.pk, user=request.user)
    except services.Conflict as err:
        return _answer(request, pk, error=str(err))
    return _answer(request, pk, message=f"Item #{pk} is open again.")


def _version(request: HttpRequest) -> int | None:
    try:
        return int(request.POST.get("version", ""))
    except ValueError:
        return None


@require_POST
def assign(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, REVIEWER)
    item = _item(request, pk)
    version = _version(request)
    assignee = _reviewers().filter(pk=request.POST.get("assignee") or 0).first()
    if version is None or assignee is None:
        return HttpResponse("choose a reviewer (and send the item's version)", status=400)
    try:
        services.assign(item_id=item.pk, assignee=assignee, version=version)
    except services.Conflict as err:
        return _answer(request, pk, error=str(err))
    return _answer(request, pk, message=f"Assigned to {assignee.username}.")


@require_POST
def decide(request: HttpRequest, pk: int) -> HttpResponse:
    require_role(request, REVIEWER)
    item = _item(request, pk)
    decision = request.POST.get("decision", "")
    version = _version(request)
    if decision not in Decision.values or version is None:
        return HttpResponse(
            f"decision must be one of {', '.join(Decision.values)} (with the item's version)",
            status=400,
        )
    try:
        services.decide(
            item_id=item.pk, user=request.user, decision=decision,
            note=request.POST.get("note", ""), version=version,
        )  # fmt: skip
    except services.Conflict as err:
        return _answer(request, pk, error=str(err))
    return _answer(request, pk, message=f"Decided: {Decision(decision).label}.")


# ------------------------------------------------------------------------- export

EXPORT_FIELDS = [
    "item_id", "conversation_id", "constitution", "source", "flag_reason", "category",
    "max_score", "decision", "note", "decided_by", "decided_at", "prompt", "reply",
]  # fmt: skip


def _safe_cell(value: Any) -> Any:
    """Spreadsheets run cells starting with = + - @ as formulas; quote those."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _export_rows(items: Any) -> Iterator[dict[str, Any]]:
    for item in items.prefetch_related("conversation__turns").iterator(chunk_size=200):
        conversation = item.conversation
        turns = sorted(
            (t for t in conversation.turns.all() if t.variant == Turn.Variant.GUARDED),
            key=lambda t: t.index,
        )
        flagged = next((t for t in turns if t.flag_reason), turns[-1] if turns else None)
        yield {
            "item_id": item.pk,
            "conversation_id": conversation.pk,
            "constitution": conversation.constitution.slug if conversation.constitution else "",
            "source": conversation.source,
            "flag_reason": conversation.flag_reason,
            "category": item.category,
            "max_score": conversation.max_score,
            "decision": item.decision,
            "note": item.note,
            "decided_by": item.decided_by.username if item.decided_by else "",
            "decided_at": item.decided_at.isoformat() if item.decided_at else "",
            "prompt": flagged.user_content if flagged else "",
            "reply": flagged.reply if flagged else "",
            "turns": [
                {"index": t.index, "user": t.user_content, "reply": t.reply,
                 "input_score": t.input_score, "input_category": t.input_category,
                 "finish_reason": t.finish_reason, "halted_at": t.halted_at}  # fmt: skip
                for t in turns
            ],
        }


@require_GET
def export(request: HttpRequest, fmt: str) -> HttpResponse:
    require_role(request, REVIEWER, POLICY_AUTHOR)
    if fmt not in ("csv", "jsonl"):
        raise Http404("export as .csv or .jsonl")
    form = QueueFilter(request.GET or None)
    if form.is_bound and not form.is_valid():
        return HttpResponse(f"bad filters: {form.errors.as_text()}", status=400)
    filters = form.cleaned_data if form.is_bound else {}
    items = services.queue_items({**filters, "status": ReviewStatus.DECIDED})
    if fmt == "csv":

        def lines() -> Iterator[str]:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, EXPORT_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in _export_rows(items):
                writer.writerow({k: _safe_cell(v) for k, v in row.items()})
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
            yield buffer.getvalue()

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(
            (json.dumps(row) + "\n" for row in _export_rows(items)),
            content_type="application/x-ndjson",
        )
    response["Content-Disposition"] = f'attachment; filename="reviewed-items.{fmt}"'
    return response


# ----------------------------------------------------------------------- feedback


@require_GET
def feedback_index(request: HttpRequest) -> HttpResponse:

    require_role(request, REVIEWER, POLICY_AUTHOR)
    constitutions = Constitution.objects.annotate(
        active_feedback=Count("feedback_examples", filter=Q(feedback_examples__active=True))
    ).order_by("name")
    return render(request, "classifiers/review/feedback_index.html", {"constitutions": constitutions})


def _feedback_context(request: HttpRequest, constitution: Any) -> dict[str, Any]:
    examples = FeedbackExample.objects.filter(constitution=constitution).select_related(
        "review_item", "created_by", "removed_by"
    )
    datasets = Dataset.objects.filter(
        constitution_version__constitution=constitution
    ).order_by("-created_at")[:5]
    runs = TrainingRun.objects.filter(
        dataset__constitution_version__constitution=constitution
    ).order_by("-created_at")[:5]
    return {
        "constitution": constitution,
        "examples": examples,
        "active_count": sum(1 for e in examples if e.active),
        "datasets": datasets,
        "runs": runs,
        "can_curate": has_role(request.user, POLICY_AUTHOR),
    }


@require_GET
def feedback(request: HttpRequest, slug: str) -> HttpResponse:

    constitution = get_object_for_role(request, Constitution, REVIEWER, POLICY_AUTHOR, slug=slug)
    return render(
        request, "classifiers/review/feedback.html", _feedback_context(request, constitution)
    )


@require_POST
def feedback_remove(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    example = get_object_for_role(request, FeedbackExample, POLICY_AUTHOR, pk=pk, constitution__slug=slug)
    remove_feedback(example=example, user=request.user)
    if htmx_partial(request):
        example.refresh_from_db()
        return render(
            request, "classifiers/review/feedback.html#row",
            {"example": example, "can_curate": True, "constitution": example.constitution},
        )  # fmt: skip
    messages.success(request, f"Feedback example #{pk} removed from future datasets.")
    return redirect("classifiers:review_feedback", slug=slug)


@require_POST
def feedback_retrain(request: HttpRequest, slug: str) -> HttpResponse:

    constitution = get_object_for_role(request, Constitution, POLICY_AUTHOR, slug=slug)
    try:
        dataset, run = retrain_with_feedback(constitution=constitution, user=request.user)
    except RetrainError as err:
        context = _feedback_context(request, constitution)
        context["retrain_error"] = str(err)
        return render(request, "classifiers/review/feedback.html", context, status=400)
    messages.success(
        request,
        f"Dataset #{dataset.pk} is building; training run #{run.pk} starts when it is done.",
    )
    return redirect(dataset)


urlpatterns = [
    path("review/", queue, name="review"),
    path("review/bulk/", bulk, name="review_bulk"),
    path("review/export.<str:fmt>", export, name="review_export"),
    path("review/<int:pk>/", item_detail, name="review_item"),
    path("review/<int:pk>/claim/", claim, name="review_claim"),
    path("review/<int:pk>/release/", release, name="review_release"),
    path("review/<int:pk>/assign/", assign, name="review_assign"),
    path("review/<int:pk>/decide/", decide, name="review_decide"),
    path("review/feedback/", feedback_index, name="review_feedback_index"),
    path("review/feedback/<slug:slug>/", feedback, name="review_feedback"),
    path("review/feedback/<slug:slug>/<int:pk>/remove/", feedback_remove, name="review_feedback_remove"),
    path("review/feedback/<slug:slug>/retrain/", feedback_retrain, name="review_retrain"),
]
