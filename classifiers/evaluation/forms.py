"""Forms of the evaluation pages: import a set, score a model on it."""

from __future__ import annotations

from typing import Any

from django import forms

from classifiers.datasets.forms import check_prompt_file
from classifiers.evaluation.services import DEFAULT_GUARD_TOKENS, GUARD_TOKENS
from classifiers.models import ActiveModel, ModelVersion


class EvaluationImportForm(forms.Form):
    name = forms.CharField(max_length=100, label="Set name")
    description = forms.CharField(max_length=500, required=False)
    file = forms.FileField(
        label="Labelled prompts",
        help_text='JSONL ({"text": ..., "label": 1 or 0, "kind"?: ...} per line), CSV with '
        "text, label and kind columns, or Parquet. Label 1 is harmful (should be "
        "blocked), 0 benign; kind groups the rows of the report.",
    )

    def clean_file(self) -> Any:
        return check_prompt_file(self.cleaned_data["file"],
                                 bigger_files="manage.py evaluate --import")  # fmt: skip


class EvaluationStartForm(forms.Form):
    model_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.none(), label="Input model",
        empty_label=None,
    )  # fmt: skip

    whole_guard = forms.BooleanField(
        required=False, label="Whole guard",
        help_text="Also generate a reply to every prompt the input classifier passes "
        "(local model) and let the output classifier of the same training run (else "
        "the constitution's active one) halt it: a prompt counts as refused when "
        "either stops it. Slow: seconds per prompt.",
    )  # fmt: skip
    max_new_tokens = forms.IntegerField(
        min_value=GUARD_TOKENS[0], max_value=GUARD_TOKENS[1], initial=DEFAULT_GUARD_TOKENS,
        required=False,
        label="Reply length (tokens)", help_text="Whole guard only.",
    )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["model_version"]
        field.queryset = ModelVersion.objects.filter(kind="input").select_related(
            "constitution"
        ).order_by("-pk")  # fmt: skip
        active = set(ActiveModel.objects.values_list("model_version_id", flat=True))
        field.label_from_instance = lambda m: (
            f"#{m.pk} {m.constitution.slug} ({m.config.get('mode', '?')}"
            f"{', active' if m.pk in active else ''})"
        )
