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


class CascadeForm(forms.Form):
    heavy_model = forms.ModelChoiceField(
        queryset=None, label="Heavy output classifier",
        help_text="Another output model of this constitution (a full-mode one, say); it "
        "joins a reply only when the active output model, the probe, is uncertain.",
    )  # fmt: skip
    escalate_percent = forms.FloatField(
        initial=5.0, min_value=0.1, max_value=50, label="Escalate (% of benign replies)",
        help_text="Sets the band's lower edge on the calibration and validation splits.",
    )  # fmt: skip
    target_fpr = forms.FloatField(
        required=False, min_value=0.0001, max_value=0.5, label="Target false-positive rate",
        help_text="Blank: the probe's own target.",
    )  # fmt: skip

    def __init__(self, *args: Any, constitution: Any, probe: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from classifiers.models import ModelVersion

        models = ModelVersion.objects.filter(constitution=constitution, kind="output")
        if probe is not None:
            models = models.exclude(pk=probe.pk)
        self.fields["heavy_model"].queryset = models


def _cascade_context(constitution: Any, policy: Any, cascade_form: CascadeForm | None = None) -> dict[str, Any]:
    from classifiers.models import CascadeCalibration
    from classifiers.services_cascade import active_probe, served_cascade

    CascadeCalibration.reap_stale()  # a calibration whose worker died shows as failed
    probe = active_probe(constitution)
    return {
        "probe": probe,
        "served_cascade": served_cascade(policy, probe),
        "stale_cascade": policy.cascade if policy.cascade_id and probe
        and policy.cascade.probe_model_id != probe.pk else None,
        "calibrations": CascadeCalibration.objects.filter(constitution=constitution)
        .select_related("probe_model", "heavy_model")[:6],
        "cascade_form": cascade_form or CascadeForm(constitution=constitution, probe=probe),
    }  # fmt: skip


def save_policy(form: GuardPolicyForm) -> None:
    saved = form.save(commit=False)
    if saved.pk:
        # Only the form's own columns: the cascade switch, made elsewhere (a
        # calibration finishing, say) after this row was read, is not written back.
        saved.save(update_fields=GuardPolicyForm.Meta.fields)
    else:
        saved.save()


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
            save_policy(form)
            if changed:
                record(constitution, request.user, "guard", f"guard settings: {', '.join(changed)}",
                       **{k: str(form.cleaned_data[k]) for k in changed})
            messages.success(request, "Guard settings saved.")
            return redirect("classifiers:guard-settings", slug=slug)
        return render(request, "classifiers/guard/settings.html",
                      {"constitution": constitution, "form": form,
                       **_cascade_context(constitution, policy)}, status=400)  # fmt: skip
    return render(request, "classifiers/guard/settings.html",
                  {"constitution": constitution, "form": form,
                   **_cascade_context(constitution, policy)})  # fmt: skip


def _author_constitution(request: HttpRequest, slug: str) -> Any:
    from constitutions.models import Constitution

    _require_any_role(request)
    constitution = get_object_or_404(Constitution, slug=slug)
    if not has_role(request.user, POLICY_AUTHOR):
        raise PermissionDenied("only policy authors change the guard's cascade")
    return constitution


@require_http_methods(["POST"])
def cascade_start(request: HttpRequest, slug: str) -> HttpResponse:
    """Start calibrating a probe cascade (a worker on the gpu queue does the work)."""
    from classifiers.models import GuardPolicy
    from classifiers.services_cascade import (
        CascadeError,
        active_probe,
        start_cascade_calibration,
    )

    constitution = _author_constitution(request, slug)
    policy = GuardPolicy.for_constitution(constitution)
    form = CascadeForm(request.POST, constitution=constitution, probe=active_probe(constitution))
    error = None
    if form.is_valid():
        try:
            start_cascade_calibration(
                constitution=constitution, heavy_model=form.cleaned_data["heavy_model"],
                escalate_fraction=form.cleaned_data["escalate_percent"] / 100,
                target_fpr=form.cleaned_data["target_fpr"], user=request.user,
            )  # fmt: skip
        except CascadeError as exc:
            error = str(exc)
        else:
            messages.success(request, "Cascade calibration started.")
            return redirect("classifiers:guard-settings", slug=slug)
    if error:
        form.add_error(None, error)
    return render(request, "classifiers/guard/settings.html",
                  {"constitution": constitution, "form": GuardPolicyForm(instance=policy),
                   **_cascade_context(constitution, policy, form)}, status=400)  # fmt: skip


@require_http_methods(["POST"])
def cascade_use(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    from classifiers.models import CascadeCalibration
    from classifiers.services_cascade import CascadeError, use_cascade

    constitution = _author_constitution(request, slug)
    job = get_object_or_404(CascadeCalibration, pk=pk, constitution=constitution)
    try:
        use_cascade(job=job, user=request.user)
    except CascadeError as exc:
        messages.error(request, str(exc))
        return redirect("classifiers:guard-settings", slug=slug)
    messages.success(request, f"Cascade #{job.pk} is now served.")
    return redirect("classifiers:guard-settings", slug=slug)


@require_http_methods(["POST"])
def cascade_off(request: HttpRequest, slug: str) -> HttpResponse:
    from classifiers.services_cascade import stop_cascade

    constitution = _author_constitution(request, slug)
    if stop_cascade(constitution=constitution, user=request.user):
        messages.success(request, "Cascade off: the output model scores alone.")
    return redirect("classifiers:guard-settings", slug=slug)


@require_http_methods(["POST"])
def cascade_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    from classifiers.models import CascadeCalibration

    constitution = _author_constitution(request, slug)
    job = get_object_or_404(CascadeCalibration, pk=pk, constitution=constitution)
    job.request_cancel()
    return redirect("classifiers:guard-settings", slug=slug)


urlpatterns = [
    path("playground/", playground, name="playground"),
    path("guard/<slug:slug>/", guard_settings, name="guard-settings"),
    path("guard/<slug:slug>/cascade/", cascade_start, name="cascade-start"),
    path("guard/<slug:slug>/cascade/off/", cascade_off, name="cascade-off"),
    path("guard/<slug:slug>/cascade/<int:pk>/use/", cascade_use, name="cascade-use"),
    path("guard/<slug:slug>/cascade/<int:pk>/cancel/", cascade_cancel, name="cascade-cancel"),
]
