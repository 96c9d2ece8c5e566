"""Forms: thin shells that turn POST data into the values services.py validates."""

from __future__ import annotations

from typing import Any

from django import forms

from constitutions import services
from constitutions.models import Constitution, Kind

LINES_HELP = "One per line."


class LinesField(forms.CharField):
    """A textarea edited one item per line, cleaned to a list of strings."""

    widget = forms.Textarea(attrs={"rows": 4})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", LINES_HELP)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return "\n".join(value)
        return value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        if isinstance(value, list | tuple):
            return [str(v) for v in value]
        return services.split_lines(value or "")


class ConstitutionCreateForm(forms.ModelForm):
    class Meta:
        model = Constitution
        fields = ["name", "slug", "domain"]
        widgets = {"domain": forms.Textarea(attrs={"rows": 2})}
        help_texts = {"slug": "Letters, digits, '-' and '_'; used in URLs."}

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if slug in services.RESERVED_SLUGS:  # would be shadowed by a fixed URL
            raise forms.ValidationError(f"'{slug}' is reserved; choose another slug.")
        return slug


class HeaderForm(forms.Form):
    name = forms.CharField(max_length=200)
    domain = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}))
    revision = forms.IntegerField(widget=forms.HiddenInput, min_value=0)


class CategoryForm(forms.Form):
    """Values of one category; validation rules come from services.validate_category."""

    name = forms.CharField(max_length=services.MAX_NAME_LENGTH, required=False)
    kind = forms.ChoiceField(choices=Kind.choices, initial=Kind.RESTRICTED)
    description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), required=False
    )
    excludes = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        help_text="What this category does not cover.",
    )
    example_queries = LinesField(help_text="At least 2; one per line.")
    example_responses = LinesField()
    languages = LinesField(widget=forms.Textarea(attrs={"rows": 2}))
    tags = LinesField(widget=forms.Textarea(attrs={"rows": 2}))
    target_fpr = forms.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        widget=forms.NumberInput(attrs={"step": "any"}),
        help_text="Optional per-category false-positive target, e.g. 0.01.",
    )
    revision = forms.IntegerField(widget=forms.HiddenInput, min_value=0, required=False)

    def __init__(
        self, *args: Any, other_names: list[str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.other_names = other_names or []

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if not self.errors:
            values = self.values()
            for field_name, messages in services.validate_category(
                values, other_names=self.other_names
            ).items():
                for message in messages:
                    self.add_error(field_name, message)
        return cleaned

    def values(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data.get("name", "").strip(),
            "kind": data.get("kind"),
            "description": data.get("description", ""),
            "excludes": data.get("excludes", ""),
            "example_queries": data.get("example_queries", []),
            "example_responses": data.get("example_responses", []),
            "languages": data.get("languages", []),
            "tags": data.get("tags", []),
            "target_fpr": data.get("target_fpr"),
        }


class PublishForm(forms.Form):
    note = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.TextInput(attrs={"placeholder": "What changed (optional)"}),
    )


class ImportForm(forms.Form):
    MODES = [
        ("new", "Create a new constitution"),
        ("replace", "Replace the draft of an existing one"),
    ]

    file = forms.FileField(help_text="A constitution YAML file (see the schema docs).")
    mode = forms.ChoiceField(choices=MODES, widget=forms.RadioSelect, initial="new")
    target = forms.ModelChoiceField(
        queryset=Constitution.objects.all(),
        to_field_name="slug",
        required=False,
        help_text="Only for 'replace'.",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("mode") == "replace" and not cleaned.get("target"):
            self.add_error("target", "Choose the constitution whose draft to replace.")
        return cleaned
