"""Publishing, version history, diffs, the audit trail and YAML import/export of
a constitution.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from constitutions import services, yaml_io
from constitutions.diff import diff_contents
from constitutions.forms import (
    ImportForm,
    PublishForm,
)
from constitutions.models import Constitution, ConstitutionVersion
from constitutions.views import (
    AUTHOR_REFUSAL,
    DETAIL,
    READER_REFUSAL,
    detail_context,
    get_constitution_for_author,
    get_constitution_for_reader,
    redirect_to_page,
)
from guardweb.roles import POLICY_AUTHOR, has_role, require_role


@require_POST
def publish(request: HttpRequest, slug: str) -> HttpResponse:
    constitution = get_constitution_for_author(request, slug)
    form = PublishForm(request.POST)
    if not form.is_valid():
        # Refuse rather than publish without the note the author wrote.
        context = detail_context(request, constitution, publish_form=form)
        return render(request, DETAIL, context, status=400)
    try:
        version = services.publish_draft(
            constitution, user=request.user, note=form.cleaned_data["note"]
        )
    except services.PublishBlocked as blocked:
        messages.error(request, "Not published: " + " ".join(blocked.reasons))
        response = redirect_to_page(constitution)
        response.status_code = 303
        return response
    messages.success(
        request, f"Published {version.label} ({version.content_hash[:12]})."
    )
    return redirect("constitutions:history", slug=slug)


@require_GET
def history(request: HttpRequest, slug: str) -> HttpResponse:
    constitution = get_constitution_for_reader(request, slug)
    versions = constitution.versions.select_related("published_by").order_by("-number")
    return render(
        request,
        "constitutions/history.html",
        {
            "constitution": constitution,
            "versions": versions,
            "draft_changed": not versions
            or versions[0].content != constitution.draft_content(),
        },
    )


@require_GET
def version_detail(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    constitution = get_constitution_for_reader(request, slug)
    version = get_object_or_404(
        ConstitutionVersion, constitution=constitution, number=number
    )
    return render(
        request,
        "constitutions/version.html",
        {"constitution": constitution, "version": version},
    )


def _side(constitution: Constitution, key: str) -> tuple[str, dict[str, Any]] | None:
    if key == "draft":
        return "Draft", constitution.draft_content()
    if key.isdigit():
        version = constitution.versions.filter(number=int(key)).first()
        if version is not None:
            return version.label, version.content
    return None


@require_GET
def diff(request: HttpRequest, slug: str) -> HttpResponse:
    constitution = get_constitution_for_reader(request, slug)
    numbers = list(
        constitution.versions.order_by("-number").values_list("number", flat=True)
    )
    default_a = str(numbers[0]) if numbers else "draft"
    a_key = request.GET.get("a", default_a)
    b_key = request.GET.get("b", "draft")
    a, b = _side(constitution, a_key), _side(constitution, b_key)
    if a is None or b is None:
        raise Http404("no such version")
    return render(
        request,
        "constitutions/diff.html",
        {
            "constitution": constitution,
            "numbers": numbers,
            "a_key": a_key,
            "b_key": b_key,
            "a_label": a[0],
            "b_label": b[0],
            "diff": diff_contents(a[1], b[1]),
        },
    )


@require_GET
def audit(request: HttpRequest, slug: str) -> HttpResponse:
    constitution = get_constitution_for_reader(request, slug)
    events = constitution.audit_events.select_related("user")
    return render(
        request,
        "constitutions/audit.html",
        {"constitution": constitution, "audit_events": events},
    )


@require_GET
def export(request: HttpRequest, slug: str) -> HttpResponse:
    constitution = get_constitution_for_reader(request, slug)
    key = request.GET.get("version", "draft")
    if key == "draft":
        text, suffix = yaml_io.export_draft(constitution), "draft"
    elif key.isdigit():
        version = get_object_or_404(
            ConstitutionVersion, constitution=constitution, number=int(key)
        )
        text, suffix = yaml_io.export_version(version), version.label
    else:
        raise Http404("no such version")
    response = HttpResponse(text, content_type="application/yaml; charset=utf-8")
    disposition = "inline" if request.GET.get("inline") else "attachment"
    response["Content-Disposition"] = f'{disposition}; filename="{slug}-{suffix}.yaml"'
    return response


@require_http_methods(["GET", "POST"])
def import_view(request: HttpRequest) -> HttpResponse:
    require_role(request, message=READER_REFUSAL)
    if request.method == "POST":
        require_role(request, POLICY_AUTHOR, message=AUTHOR_REFUSAL)
    form = ImportForm(
        request.POST or None,
        request.FILES or None,
        initial={"target": request.GET.get("target")},
    )
    errors: list[str] = []
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        if upload.size > yaml_io.MAX_BYTES:
            errors = [f"line 1: the file is larger than {yaml_io.MAX_BYTES} bytes"]
        else:
            try:
                constitution = yaml_io.import_yaml(
                    upload.read(),
                    user=request.user,
                    mode=form.cleaned_data["mode"],
                    target=form.cleaned_data.get("target"),
                )
            except yaml_io.YamlImportError as exc:
                errors = exc.errors
            else:
                messages.success(
                    request, f"Imported '{constitution.name}' into the draft."
                )
                return redirect_to_page(constitution)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "constitutions/import.html",
        {
            "form": form,
            "errors": errors,
            "is_author": has_role(request.user, POLICY_AUTHOR),
        },
        status=status,
    )
