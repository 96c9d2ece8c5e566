"""Forms for generator endpoints, starting a dataset build and browsing examples."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django import forms

from classifiers.datasets.config import (
    DEFAULT_TRAFFIC_LIMIT,
    LOCAL,
    MAX_TRAFFIC_LIMIT,
    category_problems,
    check_config,
    generate_config,
    version_problems,
)
from classifiers.ml.data.prompts import GenerateConfig
from classifiers.ml.data.splits import ALL_SPLITS, SPLITS
from classifiers.ml.data.transforms import FAMILIES
from classifiers.models import GeneratorEndpoint, TrafficPool
from classifiers.models.audit import (
    DEFAULT_SPOT_CHECK,
    MAX_SPOT_CHECK,
    REVIEWABLE_SPLITS,
)
from constitutions.models import ConstitutionVersion


class EndpointForm(forms.ModelForm):
    """The API key is write-only: never rendered back; blank keeps the stored one."""

    base_url = forms.URLField(
        assume_scheme="http", help_text="e.g. http://127.0.0.1:8001/v1"
    )
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Leave blank to keep the stored key (a changed base URL forgets it).",
    )
    clear_api_key = forms.BooleanField(required=False, label="Remove the stored key")

    class Meta:
        model = GeneratorEndpoint
        fields = [
            "name", "base_url", "model", "api_key", "timeout_seconds", "max_retries",
            "concurrency",
        ]  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stored_key = self.instance.api_key if self.instance.pk else ""
        self._stored_url = self.instance.base_url if self.instance.pk else ""
        self.fields["timeout_seconds"].min_value = 1
        self.fields["concurrency"].min_value = 1
        self.fields["concurrency"].max_value = 64
        self.fields["max_retries"].max_value = 10

    def clean_timeout_seconds(self) -> float:
        value = self.cleaned_data["timeout_seconds"]
        if not 1 <= value <= 600:
            raise forms.ValidationError("Timeout must be between 1 and 600 seconds.")
        return value

    def clean_concurrency(self) -> int:
        value = self.cleaned_data["concurrency"]
        if not 1 <= value <= 64:
            raise forms.ValidationError("Concurrency must be between 1 and 64.")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        moved = bool(self._stored_url) and cleaned.get("base_url", "").rstrip("/") != (
            self._stored_url.rstrip("/")
        )
        if cleaned.get("clear_api_key"):
            cleaned["api_key"] = ""
        elif not cleaned.get("api_key"):
            # Blank keeps the stored key, but never for a new address: a key set
            # by someone for one server must not be sent to a URL typed by another
            # (#26 item 4). Enter it again to keep using it.
            cleaned["api_key"] = "" if moved else self._stored_key
        self.instance.api_key = cleaned["api_key"]
        return cleaned


def _transform_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (family, [(name, name.replace("_", " ")) for name in names])
        for family, names in FAMILIES.items()
    ]


def _fraction_field(split: str, *, minimum: float) -> forms.FloatField:
    return forms.FloatField(
        required=False,  # blank keeps the default (older clients post none)
        min_value=minimum,
        max_value=1.0,
        initial=getattr(GenerateConfig, f"{split}_fraction"),
        label=split.capitalize(),
    )


class DatasetStartForm(forms.Form):
    version = forms.ModelChoiceField(
        queryset=None, label="Constitution version", empty_label=None
    )
    per_category = forms.IntegerField(
        min_value=1, max_value=500, initial=50, label="Queries per category",
        help_text="Author examples count towards it.",
    )  # fmt: skip
    restricted_per_category = forms.IntegerField(
        min_value=1, max_value=500, required=False, label="Queries per restricted category",
        help_text="Optional: more for the restricted categories (the guard's positives); "
        "empty = the same as above.",
    )  # fmt: skip
    responses = forms.BooleanField(
        required=False, initial=True, label="Also generate assistant responses"
    )
    transforms = forms.MultipleChoiceField(
        required=False, choices=_transform_choices, widget=forms.CheckboxSelectMultiple
    )
    variants_per_example = forms.IntegerField(
        min_value=1, max_value=10, initial=1, label="Variants per example"
    )
    heldout_families = forms.MultipleChoiceField(
        required=False,
        choices=[(f, f) for f in FAMILIES],
        widget=forms.CheckboxSelectMultiple,
        label="Held-out transform families",
        help_text="Kept out of training; evaluated on as an unseen attack family.",
    )
    generator = forms.ChoiceField(label="Generator")
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0)
    temperature = forms.FloatField(min_value=0.0, max_value=2.0, initial=0.9)
    top_p = forms.FloatField(min_value=0.05, max_value=1.0, initial=0.95)
    max_new_tokens_query = forms.IntegerField(
        min_value=4, max_value=512, initial=64, label="Max new tokens per query"
    )
    max_new_tokens_response = forms.IntegerField(
        min_value=4, max_value=1024, initial=192, label="Max new tokens per response"
    )
    opener_share = forms.FloatField(
        required=False, min_value=0.0, max_value=1.0,
        initial=GenerateConfig.opener_share, label="Prefilled opener share",
        help_text="Local model only: the share of query prompts whose answer starts "
        "with the opening words of an author example (\"Where can I\"; a restricted "
        "category's own, a permitted category's from any category). Steers a small "
        "model to write requests rather than statements; 0 turns it off.",
    )  # fmt: skip
    only_categories = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}),
        label="Only these categories",
        help_text="One category name per line; blank generates for all. A top-up run "
        "for thin categories: combine it with a full run on the datasets list.",
    )  # fmt: skip
    redteam_templates = forms.IntegerField(
        min_value=0, max_value=50, initial=4, label="New red-team templates",
        help_text="Written by the generator when 'redteam template' is selected.",
    )  # fmt: skip
    traffic_pools = forms.ModelMultipleChoiceField(
        queryset=TrafficPool.objects.none(), required=False,
        widget=forms.CheckboxSelectMultiple, label="Traffic pools",
        help_text="Everyday prompts mixed in as benign examples in every split (above "
        "all calibration, where thresholds are set), with the generator's replies.",
    )  # fmt: skip
    traffic_limit = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_TRAFFIC_LIMIT, initial=DEFAULT_TRAFFIC_LIMIT,
        label="Prompts per pool",
    )  # fmt: skip
    # Fractions of source queries per split. A larger calibration split gives a
    # steadier threshold (1% of 100 benign examples is one example).
    train_fraction = _fraction_field("train", minimum=0.01)
    validation_fraction = _fraction_field("validation", minimum=0.0)
    calibration_fraction = _fraction_field("calibration", minimum=0.01)
    test_fraction = _fraction_field("test", minimum=0.01)
    SPLIT_FIELDS = tuple(f"{split}_fraction" for split in SPLITS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:

        super().__init__(*args, **kwargs)
        field = self.fields["version"]
        field.queryset = ConstitutionVersion.objects.select_related(
            "constitution"
        ).order_by("constitution__name", "-number")
        field.label_from_instance = lambda v: f"{v.constitution.name} {v.label}"
        self.fields["traffic_pools"].queryset = TrafficPool.objects.order_by("name")
        self.fields["generator"].choices = [(LOCAL, "Local model (SmolLM2-135M)")] + [
            (f"endpoint:{e.pk}", f"{e.name} ({e.model})")
            for e in GeneratorEndpoint.objects.order_by("name")
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        version = cleaned.get("version")
        if version is not None:
            for problem in version_problems(version):
                self.add_error("version", problem)
        if self.errors:
            return cleaned
        self.config = generate_config(
            per_category=cleaned["per_category"],
            restricted_per_category=cleaned.get("restricted_per_category") or 0,
            responses=cleaned["responses"],
            transforms=cleaned["transforms"],
            variants_per_example=cleaned["variants_per_example"],
            heldout_families=cleaned["heldout_families"],
            seed=cleaned["seed"],
            temperature=cleaned["temperature"],
            top_p=cleaned["top_p"],
            max_new_tokens_query=cleaned["max_new_tokens_query"],
            max_new_tokens_response=cleaned["max_new_tokens_response"],
            redteam_templates=cleaned["redteam_templates"],
            traffic_pools=[pool.pk for pool in cleaned.get("traffic_pools") or []],
            traffic_limit=cleaned.get("traffic_limit") or DEFAULT_TRAFFIC_LIMIT,
            only_categories=[
                line.strip()
                for line in (cleaned.get("only_categories") or "").splitlines()
                if line.strip()
            ],
            opener_share=(
                GenerateConfig.opener_share
                if cleaned.get("opener_share") is None
                else cleaned["opener_share"]
            ),
            # A blank fraction keeps its default (older clients post none).
            **{
                name: cleaned[name]
                for name in self.SPLIT_FIELDS
                if cleaned.get(name) is not None
            },
        )
        for problem in check_config(self.config):
            self.add_error(None, problem)
        for problem in category_problems(version, self.config):
            self.add_error("only_categories", problem)
        return cleaned

    @property
    def endpoint(self) -> GeneratorEndpoint | None:
        choice = self.cleaned_data["generator"]
        if choice == LOCAL:
            return None
        return GeneratorEndpoint.objects.get(pk=int(choice.split(":", 1)[1]))


class ExampleFilterForm(forms.Form):
    """Filters of the example browser; invalid values are simply ignored."""

    q = forms.CharField(required=False, label="Search")
    category = forms.ChoiceField(required=False)
    label = forms.ChoiceField(
        required=False,
        choices=[("", "any label"), ("1", "1 harmful"), ("0", "0 benign")],
    )
    transform = forms.ChoiceField(required=False)
    split = forms.ChoiceField(
        required=False, choices=[("", "any split")] + [(s, s) for s in ALL_SPLITS]
    )

    def __init__(self, *args: Any, dataset: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        categories = dataset.examples.values_list("category", flat=True).distinct()
        transforms = dataset.examples.values_list("transform", flat=True).distinct()
        self.fields["category"].choices = [("", "any category")] + [
            (c, c) for c in sorted(set(categories))
        ]
        self.fields["transform"].choices = [("", "any transform")] + [
            (t, t) for t in sorted(set(transforms))
        ]

    def filter(self, queryset: Any) -> Any:
        from django.db.models import Q

        if not self.is_bound:
            return queryset
        self.is_valid()  # cleaned_data then holds only the fields that were valid
        data = self.cleaned_data
        if data.get("q"):
            queryset = queryset.filter(
                Q(prompt_text__icontains=data["q"]) | Q(response__icontains=data["q"])
            )
        for name in ("category", "label", "transform", "split"):
            if data.get(name):
                queryset = queryset.filter(**{name: data[name]})
        return queryset


# Shown on the dataset page, so it lives here; the audit domain handles the POST.
class AuditStartForm(forms.Form):
    folds = forms.IntegerField(min_value=2, max_value=10, initial=5)
    spot_check = forms.IntegerField(
        min_value=0, max_value=MAX_SPOT_CHECK, initial=DEFAULT_SPOT_CHECK,
        help_text="random non-suspects to check too: estimates the errors the model missed",
    )  # fmt: skip
    review_splits = forms.MultipleChoiceField(
        choices=[(s, s) for s in REVIEWABLE_SPLITS], required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="queue every generated source of these splits: people label the test "
        "split, and the reported numbers rest on their labels",
    )  # fmt: skip


MAX_PROMPT_FILE_BYTES = 20 * 1024 * 1024  # with a prompt cap, bounds an upload's work


def check_prompt_file(upload: Any, *, bigger_files: str) -> Any:
    """A prompt file upload (traffic pools, evaluation sets): a .jsonl, .csv or
    .parquet file of at most MAX_PROMPT_FILE_BYTES; `bigger_files` names the command
    that takes more."""
    suffix = Path(upload.name or "").suffix.lower()
    if suffix not in (".jsonl", ".csv", ".parquet"):
        raise forms.ValidationError("upload a .jsonl, .csv or .parquet file")
    if upload.size > MAX_PROMPT_FILE_BYTES:
        raise forms.ValidationError(
            f"the file is {upload.size // (1024 * 1024)} MB; upload at most "
            f"{MAX_PROMPT_FILE_BYTES // (1024 * 1024)} MB here ({bigger_files} "
            "takes bigger files)"
        )
    return upload


@contextmanager
def saved_upload(upload: Any) -> Iterator[str]:
    """The upload in a temporary file (the prompt readers take a path), removed after."""
    with tempfile.NamedTemporaryFile(suffix=Path(upload.name).suffix.lower()) as handle:
        for chunk in upload.chunks():
            handle.write(chunk)
        handle.flush()
        yield handle.name


class ShareGPTImportForm(forms.Form):
    """Real opening messages from the packaged ShareGPT conversations into a pool."""

    # About 6,000 openers are in the part pools may use; reading the packaged file
    # (125 MB) and deduplicating them takes a few seconds of the request.
    MAX_COUNT = 8_000

    name = forms.CharField(
        max_length=100, label="Pool name", initial="everyday (ShareGPT)"
    )
    count = forms.IntegerField(
        label="Messages", min_value=1, max_value=MAX_COUNT, initial=4000,
        help_text=f"1 to {MAX_COUNT:,} (about 6,000 are available)",
    )  # fmt: skip

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        if not name or "\x00" in name:
            raise forms.ValidationError("give the pool a name")
        return name


class TrafficImportForm(forms.Form):
    """Upload a file of prompts into a (new or existing) traffic pool."""

    name = forms.CharField(max_length=100, label="Pool name",
                           help_text="An existing pool's name adds to it.")  # fmt: skip
    description = forms.CharField(max_length=500, required=False)
    file = forms.FileField(
        label="Prompts file",
        help_text="JSONL ({\"text\": ..., \"label\"?: 0|1, \"kind\"?: ...} per line), "
        "CSV with a text column, or Parquet. Lines without a label are benign.",
    )

    def clean_file(self) -> Any:
        return check_prompt_file(self.cleaned_data["file"], bigger_files="manage.py import_traffic")
