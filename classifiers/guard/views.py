"""Guard settings of a constitution and its probe cascade."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods

from classifiers.guard.forms import CascadeForm, GuardPolicyForm
from classifiers.guard.policy import (
    CascadeError,
    active_probe,
    served_cascade,
    stop_cascade,
    use_cascade,
)
from classifiers.guard.services import start_cascade_calibration
from classifiers.models import CascadeCalibration, GuardPolicy
from constitutions.models import Constitution, record
from guardweb.roles import (
    POLICY_AUTHOR,
    get_object_for_role,
    require_role,
)


def _cascade_context(constitution: Any, policy: Any, cascade_form: CascadeForm | None = None) -> dict[str, Any]:

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
        saved.save(update_fields=[f for f in GuardPolicyForm.Meta.fields if f != "upstreams"])
    else:
        saved.save()
    form.save_m2m()


@require_http_methods(["GET", "POST"])
def guard_settings(request: HttpRequest, slug: str) -> HttpResponse:
    """Mode (enforce / shadow / off), shadow models and limits for one constitution."""

    constitution = get_object_for_role(request, Constitution, slug=slug)
    policy = GuardPolicy.for_constitution(constitution)
    form = GuardPolicyForm(request.POST or None, instance=policy)
    if request.method == "POST":
        require_role(request, POLICY_AUTHOR, message="only policy authors change the guard's settings")
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

    constitution = get_object_for_role(request, Constitution, slug=slug)
    require_role(request, POLICY_AUTHOR, message="only policy authors change the guard's cascade")
    return constitution


@require_http_methods(["POST"])
def cascade_start(request: HttpRequest, slug: str) -> HttpResponse:
    """Start calibrating a probe cascade (a worker on the gpu queue does the work)."""

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

    constitution = _author_constitution(request, slug)
    if stop_cascade(constitution=constitution, user=request.user):
        messages.success(request, "Cascade off: the output model scores alone.")
    return redirect("classifiers:guard-settings", slug=slug)


@require_http_methods(["POST"])
def cascade_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:

    constitution = _author_constitution(request, slug)
    job = get_object_or_404(CascadeCalibration, pk=pk, constitution=constitution)
    job.request_cancel()
    return redirect("classifiers:guard-settings", slug=slug)


urlpatterns = [
    path("guard/<slug:slug>/", guard_settings, name="guard-settings"),
    path("guard/<slug:slug>/cascade/", cascade_start, name="cascade-start"),
    path("guard/<slug:slug>/cascade/off/", cascade_off, name="cascade-off"),
    path("guard/<slug:slug>/cascade/<int:pk>/use/", cascade_use, name="cascade-use"),
    path("guard/<slug:slug>/cascade/<int:pk>/cancel/", cascade_cancel, name="cascade-cancel"),
]
