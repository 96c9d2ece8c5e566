"""The form that starts a training run."""

from __future__ import annotations

from typing import Any

from django import forms

from classifiers.training.config import (
    DEFAULT_CONFIG,
    MAX_CORRECTION_WEIGHT,
    TrainingError,
    normalize_config,
)

MODE_CHOICES = [
    ("fast", "fast: frozen backbone, head only (seconds to minutes on CPU)"),
    ("full", "full: fine-tune the backbone (slow on CPU)"),
]
LOSS_CHOICES = [
    ("running_max", "running max (halt on the cumulative maximum)"),
    ("window", "sliding window (EMA at serving)"),
]


class TrainingForm(forms.Form):
    input_mode = forms.ChoiceField(choices=MODE_CHOICES, initial="fast",
                                   label="Input classifier mode")  # fmt: skip
    output_mode = forms.ChoiceField(choices=MODE_CHOICES, initial="fast",
                                    label="Output classifier mode")  # fmt: skip
    input_epochs = forms.IntegerField(min_value=1, max_value=500,
                                      initial=DEFAULT_CONFIG["input_epochs"])  # fmt: skip
    output_epochs = forms.IntegerField(min_value=1, max_value=100,
                                       initial=DEFAULT_CONFIG["output_epochs"])  # fmt: skip
    seed = forms.IntegerField(initial=0)
    target_fpr = forms.FloatField(
        initial=0.01, min_value=0.0001, max_value=0.5, label="Target false-positive rate",
        help_text="Thresholds are calibrated so at most this share of benign "
        "calibration prompts is blocked (per-category targets from the constitution "
        "override it).",
    )
    correction_weight = forms.FloatField(
        initial=DEFAULT_CONFIG["correction_weight"], min_value=1.0,
        max_value=MAX_CORRECTION_WEIGHT, required=False, label="Weight of corrected labels",
        help_text="How much more a training prompt counts in the input classifier's "
        "loss when a person corrected its label (label-audit flips, review-queue "
        "feedback) than a generated one (1 = the same).",
    )
    output_loss = forms.ChoiceField(choices=LOSS_CHOICES, initial="running_max",
                                    label="Output classifier loss")  # fmt: skip
    probe_layers = forms.CharField(
        initial="-1", max_length=40, label="Probe layer(s)",
        help_text="Hidden-state indices the output head reads, e.g. -1 or 15,-1.",
    )
    activate_when_done = forms.BooleanField(required=False,
                                            label="Activate both models when done")  # fmt: skip

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        try:
            data["config"] = normalize_config(
                {k: v for k, v in data.items() if k != "activate_when_done"}
            )
        except TrainingError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return data
