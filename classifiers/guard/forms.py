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
            "max_new_tokens", "requests_per_minute",
        ]  # fmt: skip

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
