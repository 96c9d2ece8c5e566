"""The guard settings and cascade forms."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from classifiers.models import ModelVersion


class GuardPolicyForm(forms.ModelForm):
    class Meta:
        from classifiers.models import GuardPolicy

        model = GuardPolicy
        fields = [
            "mode", "shadow_input_model", "shadow_output_model", "max_message_chars",
            "max_prompt_tokens", "max_new_tokens", "requests_per_minute", "upstreams",
            "failure_mode", "guard_timeout_s",
        ]  # fmt: skip
        widgets = {"upstreams": forms.CheckboxSelectMultiple}
        labels = {"upstreams": "Upstream models", "guard_timeout_s": "Guard time limit (s)"}
        help_texts = {
            "upstreams": "Clients reach an attached upstream through this guard as the "
            "model CONSTITUTION/NAME. Operators register upstreams on the Upstreams page.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

        constitution = self.instance.constitution
        for name, kind in (("shadow_input_model", "input"), ("shadow_output_model", "output")):
            self.fields[name].queryset = ModelVersion.objects.filter(
                constitution=constitution, kind=kind
            )
            self.fields[name].required = False
        self.fields["max_message_chars"].validators.append(MinValueValidator(1))
        # 0 would make every reply empty.
        self.fields["max_new_tokens"].validators += [MinValueValidator(1), MaxValueValidator(512)]
        self.fields["requests_per_minute"].validators.append(MinValueValidator(1))
        self.fields["upstreams"].required = False
        self.fields["guard_timeout_s"].validators += [MinValueValidator(0.05), MaxValueValidator(120)]
        # Scripts that post only the older fields keep the stored values.
        self.fields["max_prompt_tokens"].validators += [MinValueValidator(16), MaxValueValidator(32768)]
        for name in ("failure_mode", "guard_timeout_s", "max_prompt_tokens"):
            self.fields[name].required = False

    def clean_failure_mode(self) -> str:
        return self.cleaned_data.get("failure_mode") or self.instance.failure_mode

    def clean_max_prompt_tokens(self) -> int:
        value = self.cleaned_data.get("max_prompt_tokens")
        return self.instance.max_prompt_tokens if value is None else value

    def clean_guard_timeout_s(self) -> float:
        value = self.cleaned_data.get("guard_timeout_s")
        return self.instance.guard_timeout_s if value is None else value


class UpstreamForm(forms.ModelForm):
    """Operators' form for an upstream; the stored key is write-only."""

    api_key = forms.CharField(
        required=False, max_length=500, widget=forms.PasswordInput(render_value=False),
        label="API key",
        help_text="Stored, never shown again. Leave blank to keep the stored key (a new URL "
        "forgets it). Better: name an environment variable of the server below.",
    )  # fmt: skip

    class Meta:
        from classifiers.models import Upstream

        model = Upstream
        fields = ["name", "base_url", "model", "api_key", "api_key_env", "timeout_s",
                  "max_concurrency", "max_tokens"]  # fmt: skip
        labels = {"base_url": "Base URL", "api_key_env": "API key environment variable",
                  "timeout_s": "Timeout (s)"}  # fmt: skip

    def clean(self) -> dict[str, Any]:
        from classifiers.guard.upstreams import UpstreamError, check_fields

        data = super().clean()
        try:
            data.update(check_fields({k: v for k, v in data.items() if v is not None}))
        except UpstreamError as exc:
            field, _, message = str(exc).partition(": ")
            names = {"url": "base_url", "api key env": "api_key_env", "timeout s": "timeout_s",
                     "max concurrency": "max_concurrency", "max tokens": "max_tokens"}  # fmt: skip
            target = names.get(field, field)
            self.add_error(target if target in self.fields else None, message or str(exc))
        return data

    def save_upstream(self) -> Any:
        from classifiers.guard.upstreams import add_upstream, change_upstream
        from classifiers.models import Upstream

        data = {k: self.cleaned_data[k] for k in self.Meta.fields}
        if not data["api_key"]:
            data.pop("api_key")  # blank keeps the stored key (unless the URL moves)
        if self.instance.pk:
            # The row as stored (the form has already copied its values onto
            # self.instance), so a changed URL is seen as one.
            return change_upstream(Upstream.objects.get(pk=self.instance.pk), **data)
        return add_upstream(**data)


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

        models = ModelVersion.objects.filter(constitution=constitution, kind="output")
        if probe is not None:
            models = models.exclude(pk=probe.pk)
        self.fields["heavy_model"].queryset = models
