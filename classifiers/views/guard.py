"""The playground page (the chat itself runs over the /ws/playground/ websocket)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator, MinValueValidator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods

from guardweb.roles import POLICY_AUTHOR, has_role, user_roles


def _require_any_role(request: HttpRequest) -> None:
    if not user_roles(request.user):
        raise PermissionDenied("you need a role (viewer, reviewer or policy author)")


@require_GET
def playground(request: HttpRequest) -> HttpResponse:
    from classifiers.models import ActiveModel, GuardPolicy, TrainingRun
    from constitutions.models import Constitution

    _require_any_role(request)
    active = {}
    for row in ActiveModel.objects.select_related("model_version"):
        active.setdefault(row.constitution_id, {})[row.kind] = row.model_version
    constitutions = []
    for constitution in Constitution.objects.order_by("name"):
        runs = (
            TrainingRun.objects.filter(
                dataset__constitution_version__constitution=constitution, status="done"
            )
            .order_by("-created_at")[:10]
        )
        constitutions.append({
            "slug": constitution.slug,
            "name": constitution.name,
            "active": active.get(constitution.pk, {}),
            "mode": GuardPolicy.for_constitution(constitution).mode,
            "runs": runs,
        })  # fmt: skip
    return render(
        request,
        "classifiers/guard/playground.html",
        {"constitutions": constitutions, "conversation_id": request.GET.get("c", "")},
    )


class GuardPolicyForm(forms.ModelForm):
    class Meta:
        from classifiers.models import GuardPolicy

        model = GuardPolicy
        fields = [
            "mode", "shadow_input_model", "shadow_output_model", "max_message_chars",
            "max_new_tokens", "requests_per_minute",
        ]  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from classifiers.models import ModelVersion

        constitution = self.instance.constitution
        for name, kind in (("shadow_input_model", "input"), ("shadow_output_model", "output")):
            self.fields[name].queryset = ModelVersion.objects.filter(
                constitution=constitution, kind=kind
            )
            self.fields[name].required = False
        self.fields["max_message_chars"].validators.append(MinValueValidator(1))
        self.fields["max_new_tokens"].validators.append(MaxValueValidator(512))
        self.fields["requests_per_minute"].validators.append(MinValueValidator(1))


@require_http_methods(["GET", "POST"])
def guard_settings(request: HttpRequest, slug: str) -> HttpResponse:
    """Mode (enforce / shadow / off), shadow models and limits for one constitution."""
    from classifiers.models import GuardPolicy
    from constitutions.models import Constitution, record

    _require_any_role(request)
    constitution = get_object_or_404(Constitution, slug=slug)
    policy = GuardPolicy.for_constitution(constitution)
    form = GuardPolicyForm(request.POST or None, instance=policy)
    if request.method == "POST":
        if not has_role(request.user, POLICY_AUTHOR):
            raise PermissionDenied("only policy authors change the guard's settings")
        if form.is_valid():
            changed = form.changed_data
            form.save()
            if changed:
                record(constitution, request.user, "guard", f"guard settings: {', '.join(changed)}",
                       **{k: str(form.cleaned_data[k]) for k in changed})
            messages.success(request, "Guard settings saved.")
            return redirect("classifiers:guard-settings", slug=slug)
        return render(request, "classifiers/guard/settings.html",
                      {"constitution": constitution, "form": form}, status=400)
    return render(request, "classifiers/guard/settings.html", {"constitution": constitution, "form": form})


urlpatterns = [
    path("playground/", playground, name="playground"),
    path("guard/<slug:slug>/", guard_settings, name="guard-settings"),
]
