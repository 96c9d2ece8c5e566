"""Combining datasets as a product: an author pools two runs of one constitution
version; repeats never straddle splits; reviews carry over; bad requests change
nothing."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from classifiers.models import Dataset, DatasetExample
from constitutions.models import AuditEvent
from tests.factories import published_constitution
from tests.test_label_audit import PLANTED_ID, make_generated_dataset
from tests.training_helpers import make_model

SECOND_RUN = [  # innocuous placeholders; the first repeats the author example
    ("how do I make the forbidden widget", 1, "forbidden widgets", "test"),
    ("HOW do I make the forbidden widget??", 1, "forbidden widgets", "train"),
    ("where can I buy parts for a forbidden widget", 1, "forbidden widgets", "train"),
    ("what colour should I paint my garden shed", 0, "garden care", "test"),
    ("how do I water tomatoes", 1, "forbidden widgets", "calibration"),  # other label
]

MORE = [
    ("list every part inside a forbidden widget", 1, "forbidden widgets", "train"),
    ("who secretly supplies forbidden widget kits", 1, "forbidden widgets", "validation"),
    ("explain how to hide a forbidden widget from inspectors", 1, "forbidden widgets", "calibration"),
    ("give me a shopping list for building the widget", 1, "forbidden widgets", "test"),
    ("how do I repot a root-bound fern", 0, "garden care", "train"),
    ("what should I feed my lemon tree in winter", 0, "garden care", "validation"),
    ("why are my cucumber leaves turning yellow", 0, "garden care", "calibration"),
    ("which herbs can share one planter box", 0, "garden care", "test"),
]


def make_second_run(version, status="done", *, more=False):
    dataset = Dataset.objects.create(
        constitution_version=version, status=status, finished_at=timezone.now(),
        config={"per_category": 3, "transforms": ["base64"]}, counts={"stats": {"candidates": 9}},
    )  # fmt: skip
    for index, (text, label, category, split) in enumerate(SECOND_RUN + (MORE if more else [])):
        for transform in ("original", "base64"):
            DatasetExample.objects.create(
                dataset=dataset, messages=[{"role": "user", "content": text}],
                prompt_text=text, label=label, category=category, split=split,
                source_id=f"src-{index:02d}", transform=transform, meta={"source": "generated"},
            )  # fmt: skip
    return dataset


def _rows(dataset):
    return list(dataset.examples.values_list("source_id", "transform", "split", "label"))


def test_an_author_combines_two_runs_and_repeats_are_left_out(client, alice):
    version = published_constitution(user=alice)
    first = make_generated_dataset(version)
    second = make_second_run(version)
    client.force_login(alice)
    response = client.post(
        reverse("classifiers:dataset_combine"), {"datasets": [second.pk, first.pk]}
    )
    combined = Dataset.objects.latest("pk")
    assert response.status_code == 302 and response["Location"] == combined.get_absolute_url()
    assert combined.pk not in (first.pk, second.pk)
    assert combined.status == "done" and combined.constitution_version == version
    # The older dataset is the first part: its copy of a repeated query is kept.
    info = combined.config["combined"]
    assert info["of_datasets"] == [first.pk, second.pk]
    assert info["parts"][f"d{second.pk}"] == {
        "sources": 5, "kept_sources": 2, "duplicate_sources": 3, "label_conflicts": 1,
        "examples": 4,
    }  # fmt: skip
    rows = _rows(combined)
    assert len(rows) == first.examples.count() + 4 == combined.counts["total"]
    # Every example is where its own run put it, under a prefixed id.
    for dataset in (first, second):
        prefix = f"d{dataset.pk}:"
        mine = {(sid[len(prefix):], t, s, lbl) for sid, t, s, lbl in rows if sid.startswith(prefix)}
        assert mine <= set(_rows(dataset))
    texts = list(combined.examples.filter(transform="original").values_list("prompt_text", flat=True))
    assert texts.count("how do I make the forbidden widget") == 1
    assert "where can I buy parts for a forbidden widget" in texts
    assert combined.transforms == ["rot13", "base64"]
    assert combined.counts["stats"] == {"candidates": 9}
    assert combined.counts["feedback"] == combined.feedback_included == 1  # kept rows
    assert AuditEvent.objects.filter(action="dataset", summary__contains="combined from").exists()
    page = client.get(combined.get_absolute_url()).content.decode()
    assert "Combined dataset" in page and f"dataset #{second.pk}" in page
    assert "labelled the other way" in page
    listing = client.get(reverse("classifiers:datasets")).content.decode()
    assert "combined" in listing and f'data-testid="combine-{combined.pk}"' in listing


@pytest.mark.parametrize(
    "case, message",
    [
        ("one", "at least two different datasets"),
        ("other-version", "different constitution versions"),
        ("running", "running, not done"),
        ("missing", "no dataset #999999"),
        ("junk", "choose datasets from the list"),
        ("superscript", "choose datasets from the list"),
        ("heldout", "hold out different transform families"),
    ],
)
def test_a_bad_combination_is_a_400_that_creates_nothing(client, alice, case, message):
    version = published_constitution(user=alice)
    first = make_generated_dataset(version)
    other = {
        "one": lambda: first,
        "other-version": lambda: make_second_run(published_constitution("fences", user=alice)),
        "running": lambda: make_second_run(version, status="running"),
        "missing": lambda: None,
        "junk": lambda: None,
        "superscript": lambda: None,
        "heldout": lambda: Dataset.objects.filter(pk=make_second_run(version).pk).update(
            config={"heldout_families": ["encoding"]}) and Dataset.objects.latest("pk"),
    }[case]()
    ids = {"missing": [first.pk, 999999], "junk": [first.pk, "x"],
           "superscript": [first.pk, "\u00b2"]}.get(case) or [first.pk, other.pk]  # fmt: skip
    before = Dataset.objects.count(), DatasetExample.objects.count(), AuditEvent.objects.count()
    client.force_login(alice)
    response = client.post(reverse("classifiers:dataset_combine"), {"datasets": ids})
    assert response.status_code == 400
    assert message in response.content.decode()
    after = Dataset.objects.count(), DatasetExample.objects.count(), AuditEvent.objects.count()
    assert after == before


def test_only_policy_authors_combine(client, alice, bob):
    version = published_constitution(user=alice)
    ids = [make_generated_dataset(version).pk, make_second_run(version).pk]
    client.force_login(bob)
    assert client.post(reverse("classifiers:dataset_combine"), {"datasets": ids}).status_code == 403
    assert 'data-testid="combine-form"' not in client.get(reverse("classifiers:datasets")).content.decode()
    assert Dataset.objects.count() == 2


def _review_everything(dataset, alice):
    from classifiers.audit.run import run_audit_job
    from classifiers.audit.services import apply_audit, decide, start_audit

    audit = start_audit(dataset=dataset, user=alice, folds=4, spot_check=0, enqueue=False,
                        review_splits=["train", "validation", "calibration", "test"])  # fmt: skip
    run_audit_job(audit.pk)
    for item in audit.items.all():
        decide(item=item, decision="drop" if item.source_id == PLANTED_ID else "keep", user=alice)
    return apply_audit(audit=audit, user=alice)


def test_reviews_carry_into_the_combined_dataset_only_where_every_part_was_reviewed(
    db, client, alice, victor
):
    from classifiers.datasets.combine import CombineError, combine_datasets, order_parts
    from classifiers.datasets.lineage import label_provenance

    version = published_constitution(user=alice)
    generated = make_generated_dataset(version)
    reviewed = _review_everything(generated, alice)
    assert label_provenance(reviewed)["all_reviewed"]

    with pytest.raises(CombineError, match="audited copy"):
        combine_datasets(datasets=[generated, reviewed], user=alice)
    top_up = make_second_run(version)
    assert order_parts([top_up, generated, reviewed]) == [reviewed, generated, top_up]
    half = combine_datasets(datasets=[reviewed, top_up], user=alice)
    labels = label_provenance(half)
    assert labels["combined_from"] == [reviewed.pk, half.config["combined"]["of_datasets"][1]]
    assert labels["reviewed_splits"] == [] and not labels["all_reviewed"]
    assert labels["dropped"] == 1 and labels["generated_datasets"][0] == generated.pk
    # A reviewed source keeps its mark, so a later audit of the combined data skips it.
    marked = half.examples.filter(source_id__startswith=f"d{reviewed.pk}:", transform="original")
    assert all("reviewed" in m.meta for m in marked if m.meta.get("source") == "generated")

    again = combine_datasets(datasets=[reviewed, _review_everything(make_second_run(version, more=True), alice)],
                             user=alice)  # fmt: skip
    labels = label_provenance(again)
    assert labels["all_reviewed"] and len(labels["audits"]) == 2
    model = make_model(again, "input")
    client.force_login(victor)
    page = client.get(reverse("classifiers:model", args=[model.pk])).content.decode()
    assert "Every generated label was reviewed by people" in page


def test_the_command_combines_and_names_what_it_left_out(db, alice):
    version = published_constitution(user=alice)
    first, second = make_generated_dataset(version), make_second_run(version)
    out = io.StringIO()
    call_command("combine_datasets", "--datasets", f"{first.pk},{second.pk}", stdout=out)
    text = out.getvalue()
    assert f"d{second.pk}: 2 of 5 sources (3 repeats left out, 1 of them with the other label)" in text
    combined = Dataset.objects.latest("pk")
    assert f"dataset #{combined.pk}:" in text
    with pytest.raises(CommandError, match="no dataset #424242"):
        call_command("combine_datasets", "--datasets", f"{first.pk},424242")
    with pytest.raises(CommandError, match="ids like 3,5"):
        call_command("combine_datasets", "--datasets", "3;5")
    with pytest.raises(CommandError, match="at least two"):
        call_command("combine_datasets", "--datasets", f"{first.pk}")
    assert Dataset.objects.count() == 3
