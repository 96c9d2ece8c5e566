"""Constitution pages: list, htmx editor, publishing, history, diff, YAML import/export.

Roles are enforced here, not only by hiding buttons: any of the three roles may
read; only policy authors may change anything. Users without a role get 403 on
every constitution page (they can log in and see the home page, nothing more).

Pages and their htmx fragments come from the same URLs: an htmx request (not a
boosted one) gets "template.html#partial", any other request the whole page, and
a plain (no-JavaScript) POST is answered with a redirect back to the page.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget, trigger_client_event

from constitutions import services
from constitutions.forms import (
    CategoryForm,
    ConstitutionCreateForm,
    HeaderForm,
    PublishForm,
)
from constitutions.models import Category, Constitution, Kind
from guardweb.htmx import htmx_partial
from guardweb.roles import POLICY_AUTHOR, get_object_for_role, has_role, require_role

DETAIL = "constitutions/detail.html"
AUDIT_ON_PAGE = 20
DRAFT_CHANGED = "draftChanged"  # client event: the publish panel and audit refresh

# --- Permission helpers -------------------------------------------------------------


READER_REFUSAL = "You need a role to see constitutions."
AUTHOR_REFUSAL = "Only policy authors can change constitutions."


def get_constitution_for_reader(request: HttpRequest, slug: str) -> Constitution:
    """The constitution if the user may read it; 403 without a role, else 404 if missing."""
    return get_object_for_role(request, Constitution, message=READER_REFUSAL, slug=slug)


def get_constitution_for_author(request: HttpRequest, slug: str) -> Constitution:
    """The constitution if the user may change it; 403 for others, else 404 if missing."""
    return get_object_for_role(
        request, Constitution, POLICY_AUTHOR, message=AUTHOR_REFUSAL, slug=slug
    )


def _get_category(constitution: Constitution, pk: int) -> Category:
    return get_object_or_404(
        Category.objects.select_related("constitution"),
        pk=pk,
        constitution=constitution,
    )


# --- Rendering helpers --------------------------------------------------------------


def _render(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    partial: str | None = None,
    status: int = 200,
) -> HttpResponse:
    if partial and htmx_partial(request):
        template = f"{template}#{partial}"
    return render(request, template, context, status=status)


def _annotate(categories: list[Category]) -> list[Category]:
    """Mark the ends of the list so move buttons can be disabled there."""
    for index, category in enumerate(categories):
        category.is_first = index == 0
        category.is_last = index == len(categories) - 1
    return categories


def _category_in_list(constitution: Constitution, pk: int) -> Category:
    for category in _annotate(list(constitution.categories.all())):
        if category.pk == pk:
            return category
    raise Http404("category not found")


def detail_context(
    request: HttpRequest, constitution: Constitution, **extra: Any
) -> dict[str, Any]:
    categories = _annotate(list(constitution.categories.select_related("updated_by")))
    latest = constitution.latest_version()
    context: dict[str, Any] = {
        "constitution": constitution,
        "categories": categories,
        "restricted_count": sum(c.kind == Kind.RESTRICTED for c in categories),
        "permitted_count": sum(c.kind == Kind.PERMITTED for c in categories),
        "latest": latest,
        "blockers": services.publish_blockers(constitution),
        "audit_events": constitution.audit_events.select_related("user")[
            :AUDIT_ON_PAGE
        ],
        "is_author": has_role(request.user, POLICY_AUTHOR),
        "add_form": CategoryForm(prefix="new"),
        "header_form": HeaderForm(
            initial={
                "name": constitution.name,
                "domain": constitution.domain,
                "revision": constitution.draft_revision,
            }
        ),
        "publish_form": PublishForm(),
        "editing_pk": None,
        "edit_form": None,
        "conflict": None,
        "header_conflict": None,
    }
    context.update(extra)
    return context


def _edit_form_for(category: Category) -> CategoryForm:
    return CategoryForm(
        prefix=f"c{category.pk}",
        initial={**services.category_values(category), "revision": category.revision},
    )


def _conflict_rows(
    conflict: services.Conflict, labels: dict[str, str]
) -> list[dict[str, Any]]:
    def show(value: Any) -> str:
        if isinstance(value, list):
            return "\n".join(value)
        return "" if value is None else str(value)

    return [
        {
            "field": labels.get(f, f),
            "theirs": show(conflict.theirs.get(f)),
            "mine": show(conflict.mine.get(f)),
        }
        for f in conflict.fields
    ]


def redirect_to_page(constitution: Constitution, anchor: str = "") -> HttpResponse:
    url = reverse("constitutions:detail", args=[constitution.slug])
    return redirect(f"{url}#{anchor}" if anchor else url)


def _changed(response: HttpResponse) -> HttpResponse:
    return trigger_client_event(response, DRAFT_CHANGED)


# --- List and create ----------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def constitution_list(request: HttpRequest) -> HttpResponse:
    require_role(request, message=READER_REFUSAL)
    form = ConstitutionCreateForm()
    if request.method == "POST":
        require_role(request, POLICY_AUTHOR, message=AUTHOR_REFUSAL)
        form = ConstitutionCreateForm(request.POST)
        if form.is_valid():
            constitution = services.create_constitution(
                user=request.user, **form.cleaned_data
            )
            messages.success(
                request, f"Created '{constitution.name}'. Add categories below."
            )
            return redirect_to_page(constitution)
    constitutions = []
    for constitution in Constitution.objects.prefetch_related("categories"):
        kinds = [c.kind for c in constitution.categories.all()]
        constitution.restricted_count = kinds.count(Kind.RESTRICTED)
        constitution.permitted_count = kinds.count(Kind.PERMITTED)
        constitution.latest = constitution.latest_version()
        constitutions.append(constitution)
    return _render(
        request,
        "constitutions/list.html",
        {
            "constitutions": constitutions,
            "form": form,
            "is_author": has_role(request.user, POLICY_AUTHOR),
        },
        partial="create_form" if request.method == "POST" else None,
        status=400 if request.method == "POST" else 200,
    )


# --- The editor page and its fragments ----------------------------------------------


FRAGMENTS = {"publish_panel", "audit", "category_list", "header"}


@require_GET
def constitution_detail(request: HttpRequest, slug: str) -> HttpResponse:
    constitution = get_constitution_for_reader(request, slug)
    context = detail_context(request, constitution)
    edit = request.GET.get("edit", "")
    if edit.isdigit() and context["is_author"]:  # the no-JavaScript way into an edit
        category = next((c for c in context["categories"] if c.pk == int(edit)), None)
        if category is not None:
            context.update(editing_pk=category.pk, edit_form=_edit_form_for(category))
    fragment = request.GET.get("fragment")
    return _render(
        request, DETAIL, context, partial=fragment if fragment in FRAGMENTS else None
    )


@require_POST
def header_save(request: HttpRequest, slug: str) -> HttpResponse:
    constitution = get_constitution_for_author(request, slug)
    form = HeaderForm(request.POST)
    if not form.is_valid():
        context = detail_context(
            request, constitution, header_form=form, header_open=True
        )
        return _render(request, DETAIL, context, partial="header", status=400)
    try:
        constitution = services.update_header(
            constitution,
            form.cleaned_data,
            seen_revision=form.cleaned_data["revision"],
            user=request.user,
        )
    except services.Conflict as conflict:
        mine = HeaderForm(initial={**conflict.mine, "revision": conflict.revision})
        context = detail_context(
            request,
            constitution,
            header_form=mine,
            header_open=True,
            header_conflict={
                "rows": _conflict_rows(conflict, {"name": "Name", "domain": "Domain"}),
                "by": conflict.by,
                "at": conflict.at,
            },
        )
        return _render(request, DETAIL, context, partial="header", status=409)
    if not htmx_partial(request):
        messages.success(request, "Saved the name and domain.")
        return redirect_to_page(constitution)
    context = detail_context(request, constitution, saved_at=timezone.localtime())
    return _changed(_render(request, DETAIL, context, partial="header"))


@require_POST
def category_add(request: HttpRequest, slug: str) -> HttpResponse:
    constitution = get_constitution_for_author(request, slug)
    names = list(constitution.categories.values_list("name", flat=True))
    form = CategoryForm(request.POST, prefix="new", other_names=names)
    if form.is_valid():
        try:
            category = services.add_category(
                constitution, form.values(), user=request.user
            )
        except services.ValidationFailed as exc:
            for field_name, field_messages in exc.errors.items():
                for message in field_messages:
                    form.add_error(field_name, message)
        else:
            if not htmx_partial(request):
                messages.success(request, f"Added '{category.name}'.")
                return redirect_to_page(constitution, f"cat-{category.pk}")
            # A fresh add form, plus the new list swapped out of band.
            context = detail_context(
                request, constitution, oob=True, added_pk=category.pk
            )
            return _changed(_render(request, DETAIL, context, partial="add_form"))
    context = detail_context(request, constitution, add_form=form)
    return _render(
        request,
        DETAIL,
        context,
        partial="add_form",
        status=200 if htmx_partial(request) else 400,
    )


@require_POST
def category_validate(request: HttpRequest, slug: str) -> HttpResponse:
    """Live validation: inline messages for every field of the posted form."""
    constitution = get_constitution_for_author(request, slug)
    prefix = request.POST.get("prefix", "new")
    exclude = int(prefix[1:]) if prefix[:1] == "c" and prefix[1:].isdigit() else None
    names = list(
        constitution.categories.exclude(pk=exclude).values_list("name", flat=True)
    )
    form = CategoryForm(request.POST, prefix=prefix, other_names=names)
    form.is_valid()
    fields = [name for name in form.fields if name != "revision"]
    return render(
        request,
        f"{DETAIL}#field_errors",
        {
            "prefix": prefix,
            "field_errors": [(name, form.errors.get(name, [])) for name in fields],
        },
    )


@require_GET
def category_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    constitution = get_constitution_for_reader(request, slug)
    category = _category_in_list(constitution, pk)
    if not htmx_partial(request):
        return redirect_to_page(constitution, f"cat-{pk}")
    context = detail_context(request, constitution, category=category)
    return _render(request, DETAIL, context, partial="category")


@require_http_methods(["GET", "POST"])
def category_edit(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    constitution = get_constitution_for_author(request, slug)
    category = _category_in_list(constitution, pk)
    if request.method == "GET":
        if not htmx_partial(request):
            url = reverse("constitutions:detail", args=[slug])
            return redirect(f"{url}?edit={pk}#cat-{pk}")
        context = detail_context(
            request,
            constitution,
            category=category,
            editing_pk=pk,
            edit_form=_edit_form_for(category),
        )
        return _render(request, DETAIL, context, partial="category")
    return _save_category(request, constitution, category, autosave=False)


@require_POST
def category_autosave(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    constitution = get_constitution_for_author(request, slug)
    category = _category_in_list(constitution, pk)
    return _save_category(request, constitution, category, autosave=True)


def _save_category(
    request: HttpRequest,
    constitution: Constitution,
    category: Category,
    *,
    autosave: bool,
) -> HttpResponse:
    prefix = f"c{category.pk}"
    names = list(
        constitution.categories.exclude(pk=category.pk).values_list("name", flat=True)
    )
    form = CategoryForm(request.POST, prefix=prefix, other_names=names)
    seen = request.POST.get(f"{prefix}-revision", "")

    def editor(status: int, **extra: Any) -> HttpResponse:
        context = detail_context(
            request,
            constitution,
            category=category,
            editing_pk=category.pk,
            edit_form=form,
            **extra,
        )
        response = _render(request, DETAIL, context, partial="category", status=status)
        if autosave:  # the autosave's own target is the status line; swap the card
            retarget(response, f"#cat-{category.pk}")
            reswap(response, "outerHTML")
        return response

    if not seen.isdigit():
        form.is_valid()
        form.add_error(None, "The form lost its revision; reload the page.")
        return editor(400)
    if not form.is_valid():
        if autosave:
            return render(
                request,
                f"{DETAIL}#autosave_status",
                {
                    "status": "Not saved: fix the fields marked in red.",
                    "error": True,
                },
            )
        return editor(200 if htmx_partial(request) else 400)
    try:
        saved = services.update_category(
            category, form.values(), seen_revision=int(seen), user=request.user
        )
    except services.ValidationFailed as exc:
        for field_name, field_messages in exc.errors.items():
            for message in field_messages:
                form.add_error(field_name, message)
        return editor(200 if htmx_partial(request) else 400)
    except services.Gone:
        messages.error(
            request, "Someone deleted this category while you were editing it."
        )
        response = HttpResponse(
            "This category was deleted by someone else.", status=404
        )
        return response if htmx_partial(request) else redirect_to_page(constitution)
    except services.Conflict as conflict:
        labels = {name: str(field.label) for name, field in form.fields.items()}
        mine = CategoryForm(
            prefix=prefix, initial={**conflict.mine, "revision": conflict.revision}
        )
        form = mine
        return editor(
            409,
            conflict={
                "rows": _conflict_rows(conflict, labels),
                "by": conflict.by,
                "at": conflict.at,
            },
        )
    if autosave:
        response = render(
            request,
            f"{DETAIL}#autosave_status",
            {
                "status": f"Saved at {timezone.localtime():%H:%M:%S}",
                "error": False,
                "revision": saved.revision,
                "prefix": prefix,
                "category": saved,
            },
        )
        return _changed(response)
    if not htmx_partial(request):
        messages.success(request, f"Saved '{saved.name}'.")
        return redirect_to_page(constitution, f"cat-{saved.pk}")
    fresh = _category_in_list(constitution, saved.pk)
    context = detail_context(
        request,
        constitution,
        category=fresh,
        saved_at=timezone.localtime(),
        focus_edit=True,
    )
    return _changed(_render(request, DETAIL, context, partial="category"))


@require_POST
def category_move(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    constitution = get_constitution_for_author(request, slug)
    category = _get_category(constitution, pk)
    direction = request.POST.get("direction", "")
    if direction not in {"up", "down"}:
        return HttpResponse("direction must be 'up' or 'down'", status=400)
    try:
        services.move_category(category, direction=direction, user=request.user)
    except services.Gone:
        raise Http404("category not found") from None
    if not htmx_partial(request):
        return redirect_to_page(constitution, f"cat-{pk}")
    context = detail_context(
        request, constitution, moved_pk=pk, moved_direction=direction
    )
    return _changed(_render(request, DETAIL, context, partial="category_list"))


@require_POST
def category_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    constitution = get_constitution_for_author(request, slug)
    category = _get_category(constitution, pk)
    seen = request.POST.get("revision", "")
    try:
        services.delete_category(
            category,
            seen_revision=int(seen) if seen.isdigit() else None,
            user=request.user,
        )
    except services.Conflict as conflict:
        who = conflict.by.username if conflict.by else "someone"
        notice = f"Not deleted: {who} changed this category since you loaded it. Check it and delete again."
        if not htmx_partial(request):
            messages.error(request, notice)
            return redirect_to_page(constitution, f"cat-{pk}")
        fresh = _category_in_list(constitution, pk)
        context = detail_context(request, constitution, category=fresh, notice=notice)
        response = _render(request, DETAIL, context, partial="category", status=409)
        return retarget(response, f"#cat-{pk}")
    if not htmx_partial(request):
        messages.success(request, f"Deleted '{category.name}'.")
        return redirect_to_page(constitution)
    context = detail_context(request, constitution)
    return _changed(_render(request, DETAIL, context, partial="category_list"))
