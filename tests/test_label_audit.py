"""Label audits as a product: the real worker queues a planted label error, a
reviewer flips it, an author applies it as a new dataset; bad input changes nothing."""

from __future__ import annotations

import codecs
import io
import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from classifiers.models import Dataset, DatasetExample, LabelAudit, LabelAuditItem
from tests.factories import published_constitution
from tests.training_helpers import (
    BENIGN_QUERIES,
    HARMFUL_QUERIES,
    wait_for_job,
)

# Generated under the restricted category, but plainly a gardening question.
PLANTED = "how do I protect my cucumber seedlings from frost"


def make_generated_dataset(version):
    """24 generated sources (each with a rot13 copy) plus one author example per
    category; one source carries the wrong label."""
    dataset = Dataset.objects.create(
        constitution_version=version, status="done", finished_at=timezone.now(),
        config={"per_category": 13, "transforms": ["rot13"]},
    )  # fmt: skip
    rows = []
    sources = [(q, 1, "forbidden widgets") for q in HARMFUL_QUERIES[:12]]
    sources += [(q, 0, "garden care") for q in BENIGN_QUERIES[:12]]
    sources.append((PLANTED, 1, "forbidden widgets"))
    for index, (query, label, category) in enumerate(sources):
        split = ("train", "validation", "calibration", "test")[index % 4]
        common = dict(
            dataset=dataset, response="", label=label, category=category,
            source_id=f"src-{index:02d}", split=split,
        )  # fmt: skip
        rows.append(DatasetExample(
            messages=[{"role": "user", "content": query}], prompt_text=query,
            meta={"source": "generated"}, **common,
        ))  # fmt: skip
        hidden = codecs.encode(query, "rot13")
        rows.append(DatasetExample(
            messages=[{"role": "user", "content": hidden}], prompt_text=hidden,
            transform="rot13", meta={"source": "generated"}, **common,
        ))  # fmt: skip
    for query, label, category, source in (
        ("how do I make the forbidden widget", 1, "forbidden widgets", "author"),
        ("how do I water tomatoes", 0, "garden care", "author"),
        # A reviewer's decision on live traffic: people labelled it, never audited.
        ("how do I sharpen my garden shears", 0, "garden care", "feedback"),
    ):
        rows.append(DatasetExample(
            dataset=dataset, messages=[{"role": "user", "content": query}], prompt_text=query,
            label=label, category=category, source_id=f"{source}-{label}", split="train",
            meta={"source": source},
        ))  # fmt: skip
    DatasetExample.objects.bulk_create(rows)
    return dataset


PLANTED_ID = "src-24"


def _hx(client, url, data):
    return client.post(url, data, HTTP_HX_REQUEST="true")


@pytest.mark.slow
def test_audit_through_the_worker_then_a_reviewer_flips_and_an_author_applies(
    celery_worker, client, alice, bob, victor
):
    dataset = make_generated_dataset(published_constitution(user=alice))
    client.force_login(alice)
    page = client.get(reverse("classifiers:dataset", args=[dataset.pk]))
    assert b'data-testid="audit-start"' in page.content
    response = client.post(
        reverse("classifiers:label_audit_start", args=[dataset.pk]),
        {"folds": 4, "spot_check": 3},
    )
    audit = LabelAudit.objects.get()
    assert (
        response.status_code == 302 and response["Location"] == audit.get_absolute_url()
    )
    audit = wait_for_job(audit, timeout=120)
    assert audit.status == "done", audit.error
    assert audit.summary["generated_sources"] == 25  # author examples are not audited
    assert audit.summary["sources"] == 27  # reviewed feedback is not even scored

    items = list(audit.items.all())
    suspects = [i for i in items if i.suspect]
    planted = next(i for i in suspects if i.source_id == PLANTED_ID)
    assert planted.text == PLANTED and planted.suggested_category == "garden care"
    assert len([i for i in items if not i.suspect]) == 3  # the spot check
    assert all(i.source_id.startswith("src-") for i in items)
    # Each item keeps its sentence embedding (MiniLM: 384 float16), for learn_order.
    assert all(len(bytes(i.embedding)) == 384 * 2 for i in items)
    page = client.get(audit.get_absolute_url())
    assert (
        PLANTED.encode() in page.content
        and b'data-testid="audit-histogram"' in page.content
    )

    # A viewer reads but cannot decide; the reviewer flips the planted error.
    client.force_login(victor)
    url = reverse("classifiers:label_audit_decide", args=[audit.pk, planted.pk])
    assert client.post(url, {"decision": "flip"}).status_code == 403
    client.force_login(bob)
    response = _hx(client, url, {"decision": "flip", "new_category": "garden care"})
    assert response.status_code == 200 and b'data-decision="flip"' in response.content
    other = next(i for i in items if i.pk != planted.pk)
    drop_url = reverse("classifiers:label_audit_decide", args=[audit.pk, other.pk])
    assert _hx(client, drop_url, {"decision": "drop"}).status_code == 200
    assert (
        client.post(
            reverse("classifiers:label_audit_apply", args=[audit.pk])
        ).status_code
        == 403
    )

    client.force_login(alice)
    response = client.post(reverse("classifiers:label_audit_apply", args=[audit.pk]))
    audit.refresh_from_db()
    copy = audit.applied_dataset
    assert (
        response.status_code == 302 and response["Location"] == copy.get_absolute_url()
    )
    # Every copy of the planted source (original and rot13) is relabelled; every copy
    # of the dropped one is gone; the rest is as it was, split by split.
    flipped = copy.examples.filter(source_id=PLANTED_ID)
    assert flipped.count() == 2
    assert {(e.label, e.category) for e in flipped} == {(0, "garden care")}
    assert not copy.examples.filter(source_id=other.source_id).exists()
    assert copy.examples.count() == dataset.examples.count() - 2
    assert copy.counts["total"] == copy.examples.count()
    assert copy.config["audit"]["flipped"] == 1 and copy.config["audit"]["dropped"] == 1
    # The audited dataset is untouched: models trained on it keep their data.
    assert set(
        dataset.examples.filter(source_id=PLANTED_ID).values_list("label", flat=True)
    ) == {1}
    assert dataset.examples.filter(source_id=other.source_id).count() == 2
    page = client.get(copy.get_absolute_url())
    assert b'data-testid="audited-from"' in page.content

    # Applied audits are closed.
    again = client.post(reverse("classifiers:label_audit_apply", args=[audit.pk]))
    assert again.status_code == 400 and b"already applied" in again.content
    late = _hx(client, drop_url, {"decision": "keep"})
    assert late.status_code == 400 and b"was applied" in late.content
    assert Dataset.objects.count() == 2

    from constitutions.models import AuditEvent

    assert AuditEvent.objects.filter(
        action="dataset", summary__contains=f"#{copy.pk}"
    ).exists()


@pytest.fixture
def audited(db, alice):
    """A finished audit (rows written directly) with one suspect and one spot check."""
    dataset = make_generated_dataset(published_constitution(user=alice))
    audit = LabelAudit.objects.create(
        dataset=dataset, status="done", config={"folds": 4, "spot_check": 1},
        summary={"generated_sources": 25, "generated_suspects": 1, "sources": 27},
    )  # fmt: skip
    suspect = LabelAuditItem.objects.create(
        audit=audit, source_id=PLANTED_ID, text=PLANTED, label=1,
        category="forbidden widgets", harm_score=0.04, suspect=True,
        suggested_category="garden care", rank=0,
    )  # fmt: skip
    spot = LabelAuditItem.objects.create(
        audit=audit, source_id="src-13", text=BENIGN_QUERIES[1], label=0,
        category="garden care", harm_score=0.02, suspect=False,
        suggested_category="forbidden widgets", rank=1,
    )  # fmt: skip
    return audit, suspect, spot


def test_bad_decisions_are_refused_and_change_nothing(client, bob, audited):
    audit, suspect, _ = audited
    client.force_login(bob)
    url = reverse("classifiers:label_audit_decide", args=[audit.pk, suspect.pk])
    same_kind = _hx(
        client, url, {"decision": "flip", "new_category": "forbidden widgets"}
    )
    assert same_kind.status_code == 400
    assert b"needs a permitted category" in same_kind.content
    unknown = _hx(client, url, {"decision": "flip", "new_category": "no such category"})
    assert unknown.status_code == 400 and b"not a category" in unknown.content
    bad = _hx(client, url, {"decision": "maybe"})
    assert bad.status_code == 400 and b"unknown decision" in bad.content
    suspect.refresh_from_db()
    assert suspect.decision == "" and suspect.decided_by is None
    other_audit = LabelAudit.objects.create(dataset=audit.dataset, status="done")
    wrong = reverse("classifiers:label_audit_decide", args=[other_audit.pk, suspect.pk])
    assert client.post(wrong, {"decision": "keep"}).status_code == 404


def test_flip_defaults_to_the_suggested_category_and_a_decision_can_change(
    client, bob, audited
):
    audit, suspect, _ = audited
    client.force_login(bob)
    url = reverse("classifiers:label_audit_decide", args=[audit.pk, suspect.pk])
    assert client.post(url, {"decision": "flip"}).status_code == 302
    suspect.refresh_from_db()
    assert (suspect.decision, suspect.new_category, suspect.decided_by) == (
        "flip",
        "garden care",
        bob,
    )
    assert client.post(url, {"decision": "keep"}).status_code == 302
    suspect.refresh_from_db()
    assert (suspect.decision, suspect.new_category) == ("keep", "")


def test_report_estimates_the_errors_the_model_did_not_flag(client, bob, audited):
    from classifiers.audit.report import audit_report
    from classifiers.audit.services import decide

    audit, suspect, spot = audited
    decide(item=suspect, decision="flip", user=bob)
    decide(item=spot, decision="drop", user=bob)
    report = audit_report(audit)
    assert report["suspect_precision"] == 1.0
    assert report["spot_error_rate"] == 1.0 and report["pending"] == 0
    # 1 of 1 spot-checked was wrong (and is fixed now): the 23 unflagged sources nobody
    # checked may all be wrong, within a wide interval.
    assert report["estimated_unflagged_errors"] == 23
    assert report["spot_error_interval"][0] < 0.3
    client.force_login(bob)
    page = client.get(audit.get_absolute_url() + "?show=decided")
    assert b'data-testid="spot-check"' in page.content and b"100%" in page.content


def test_starting_an_audit_refuses_bad_input(client, alice, bob, audited):
    audit, _, _ = audited
    dataset = audit.dataset
    url = reverse("classifiers:label_audit_start", args=[dataset.pk])
    client.force_login(bob)
    assert client.post(url, {"folds": 5, "spot_check": 20}).status_code == 403
    client.force_login(alice)
    bad = client.post(url, {"folds": 1, "spot_check": 20})
    assert bad.status_code == 400 and b"Folds" in bad.content
    LabelAudit.objects.create(dataset=dataset, status="running")
    busy = client.post(url, {"folds": 5, "spot_check": 20})
    assert busy.status_code == 400 and b"already running" in busy.content
    unfinished = Dataset.objects.create(
        constitution_version=dataset.constitution_version
    )
    response = client.post(
        reverse("classifiers:label_audit_start", args=[unfinished.pk]),
        {"folds": 5, "spot_check": 0},
    )
    assert (
        response.status_code == 400 and b"audit a finished dataset" in response.content
    )
    top_up = Dataset.objects.create(
        constitution_version=dataset.constitution_version, status="done"
    )
    for row in dataset.examples.filter(label=1)[:4]:
        row.pk, row.dataset = None, top_up
        row.save()
    response = client.post(
        reverse("classifiers:label_audit_start", args=[top_up.pk]),
        {"folds": 5, "spot_check": 0},
    )
    assert response.status_code == 400
    assert b"harmful examples only" in response.content and b"combine" in response.content
    assert LabelAudit.objects.count() == 2  # the fixture's and the running one


def test_applying_nothing_is_refused(client, alice, audited):
    audit, suspect, _ = audited
    from classifiers.audit.services import decide

    decide(item=suspect, decision="keep", user=alice)
    client.force_login(alice)
    response = client.post(reverse("classifiers:label_audit_apply", args=[audit.pk]))
    assert response.status_code == 400 and b"nothing to apply" in response.content
    assert Dataset.objects.count() == 1


def test_a_late_cancel_saves_nothing(db, alice):
    from classifiers.audit.run import execute_audit
    from classifiers.audit.services import start_audit
    from classifiers.ml.types import Cancelled

    dataset = make_generated_dataset(published_constitution(user=alice))
    audit = start_audit(dataset=dataset, user=alice, folds=3, enqueue=False)
    LabelAudit.objects.filter(pk=audit.pk).update(status="running")

    def cancel_after_scoring(**_):
        LabelAudit.objects.filter(pk=audit.pk).update(cancel_requested=True)

    with pytest.raises(Cancelled):
        execute_audit(
            audit, progress=cancel_after_scoring, should_cancel=lambda: False,
            finish=lambda **_: pytest.fail("finished after a cancel"),
        )  # fmt: skip
    assert not LabelAuditItem.objects.filter(audit=audit).exists()


def test_cancel_a_queued_audit(client, alice, audited):
    audit, _, _ = audited
    queued = LabelAudit.objects.create(dataset=audit.dataset)
    client.force_login(alice)
    response = client.post(reverse("classifiers:label_audit_cancel", args=[queued.pk]))
    queued.refresh_from_db()
    assert response.status_code == 302 and queued.status == "cancelled"


def test_command_runs_records_decisions_and_applies(db, alice, tmp_path):
    from django.core.management import CommandError, call_command

    dataset = make_generated_dataset(published_constitution(user=alice))
    queue = tmp_path / "queue.jsonl"
    call_command(
        "audit_labels", dataset=dataset.pk, folds=3, spot_check=2, export=str(queue)
    )
    audit = LabelAudit.objects.get()
    rows = [json.loads(line) for line in queue.read_text().splitlines()]
    assert len(rows) == audit.items.count() and rows[0]["suspect"] is True

    decisions = tmp_path / "decided.jsonl"
    decisions.write_text(
        json.dumps({"source_id": rows[0]["source_id"], "decision": "drop"})
        + "\n{not json\n"
    )
    with pytest.raises(CommandError, match="decided.jsonl:2"):
        call_command(
            "audit_labels", audit=audit.pk, decisions=str(decisions), user="alice"
        )
    # The file is checked before anything is recorded.
    assert not audit.items.exclude(decision="").exists()
    decisions.write_text(
        json.dumps({"source_id": rows[0]["source_id"], "decision": "drop"}) + "\n"
    )
    call_command(
        "audit_labels",
        audit=audit.pk,
        decisions=str(decisions),
        user="alice",
        apply=True,
    )
    audit.refresh_from_db()
    assert audit.applied_dataset is not None
    assert not audit.applied_dataset.examples.filter(
        source_id=rows[0]["source_id"]
    ).exists()
    with pytest.raises(CommandError, match="either --dataset"):
        call_command("audit_labels")


def test_a_decision_archive_replays_on_a_new_audit_without_texts(db, alice, tmp_path):
    import hashlib

    from django.core.management import CommandError, call_command

    dataset = make_generated_dataset(published_constitution(user=alice))
    call_command("audit_labels", dataset=dataset.pk, folds=3, spot_check=2)
    first = LabelAudit.objects.get()
    items = list(first.items.order_by("rank"))
    decisions = tmp_path / "decided.jsonl"
    decisions.write_text(
        json.dumps({"source_id": items[0].source_id, "decision": "drop"})
        + "\n"
        + json.dumps({"source_id": items[1].source_id, "decision": "keep"})
        + "\n"
    )
    archive = tmp_path / "archive.jsonl"
    call_command(
        "audit_labels", audit=first.pk, decisions=str(decisions),
        export_decisions=str(archive),
    )  # fmt: skip
    rows = [json.loads(line) for line in archive.read_text().splitlines()]
    assert len(rows) == 2
    for row, item in zip(rows, items[:2], strict=True):
        # Only these fields: no text leaves the data directory.
        assert set(row) == {"text_sha256", "label", "category", "decision", "new_category"}
        assert row["text_sha256"] == hashlib.sha256(item.text.encode()).hexdigest()

    # A malformed hash or label is an error naming the line.
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps(dict(rows[1], label="1")) + "\n")
    with pytest.raises(CommandError, match="bad.jsonl:2"):
        call_command("audit_labels", audit=first.pk, decisions=str(bad))
    bad.write_text(json.dumps(dict(rows[0], text_sha256="ABC")) + "\n")
    with pytest.raises(CommandError, match="bad.jsonl:1.*64 lowercase hex"):
        call_command("audit_labels", audit=first.pk, decisions=str(bad))

    # An archive line for a text the queue lacks, and one whose label differs
    # there, are skipped; the rest are recorded on the second audit.
    stranger = {"text_sha256": "0" * 64, "label": 1, "decision": "flip"}
    relabelled = dict(rows[1], label=1 - rows[1]["label"])
    archive.write_text(
        "\n".join(json.dumps(r) for r in (rows[0], stranger, relabelled)) + "\n"
    )
    call_command("audit_labels", dataset=dataset.pk, folds=3, spot_check=2)
    second = LabelAudit.objects.exclude(pk=first.pk).get()
    out = io.StringIO()
    call_command("audit_labels", audit=second.pk, decisions=str(archive), stdout=out)
    assert "1 decisions recorded; skipped 1 for texts not in this queue and 1 whose label differs" in out.getvalue()
    decided = {i.source_id: i.decision for i in second.items.exclude(decision="")}
    assert decided == {items[0].source_id: "drop"}


def test_a_reviewed_split_queues_every_generated_source_of_it(db, alice):
    from classifiers.audit.report import audit_report
    from classifiers.audit.run import AuditError, run_audit_job
    from classifiers.audit.services import apply_audit, decide, start_audit

    dataset = make_generated_dataset(published_constitution(user=alice))
    with pytest.raises(AuditError, match="unknown split nonsense"):
        start_audit(
            dataset=dataset, user=alice, review_splits=["nonsense"], enqueue=False
        )
    audit = start_audit(
        dataset=dataset,
        user=alice,
        folds=4,
        spot_check=2,
        review_splits=["test"],
        enqueue=False,
    )
    run_audit_job(audit.pk)
    audit.refresh_from_db()
    assert audit.status == "done", audit.error
    test_sources = set(
        dataset.examples.filter(split="test", meta__source="generated").values_list(
            "source_id", flat=True
        )
    )
    queued = {i.source_id: i for i in audit.items.all()}
    assert test_sources <= set(queued)  # all of them, suspects or not
    assert {i.reason for i in queued.values() if i.source_id in test_sources} <= {
        "suspect",
        "split",
    }
    spot = [i for i in queued.values() if i.reason == "spot_check"]
    assert len(spot) == 2 and not {i.source_id for i in spot} & test_sources
    for item in queued.values():
        decide(item=item, decision="keep", user=alice)
    report = audit_report(audit)
    checked = sum(1 for i in queued.values() if not i.suspect)
    assert (
        sum(report["spot_check"].values()) == checked
        and report["spot_error_rate"] == 0.0
    )
    assert report["by_reason"]["split"]["keep"] == audit.summary["review_split_sources"]
    # Checked and all right: applying records the reviewed split (nothing flipped).
    copy = apply_audit(audit=audit, user=alice)
    assert copy.config["audit"]["reviewed_splits"] == ["test"]
    assert copy.examples.count() == dataset.examples.count()
    # A later audit of the copy does not queue what people already decided.
    again = start_audit(dataset=copy, user=alice, folds=4, spot_check=50, enqueue=False)
    run_audit_job(again.pk)
    again.refresh_from_db()
    assert again.status == "done", again.error
    assert not set(again.items.values_list("source_id", flat=True)) & set(queued)
    assert again.summary["already_reviewed"] == len(queued)


def test_a_half_reviewed_split_does_not_count_as_reviewed(db, alice):
    from classifiers.audit.report import completed_review_splits
    from classifiers.audit.run import run_audit_job
    from classifiers.audit.services import apply_audit, decide, start_audit

    dataset = make_generated_dataset(published_constitution(user=alice))
    audit = start_audit(dataset=dataset, user=alice, folds=4, spot_check=0,
                        review_splits=["test", "calibration"], enqueue=False)  # fmt: skip
    run_audit_job(audit.pk)
    audit.refresh_from_db()
    split_of = dict(
        dataset.examples.filter(transform="original").values_list("source_id", "split")
    )
    items = list(audit.items.all())
    left_open = next(i for i in items if split_of[i.source_id] == "calibration")
    for item in items:
        if item.pk != left_open.pk:
            decide(item=item, decision="drop" if item.source_id == PLANTED_ID else "keep",
                   user=alice)  # fmt: skip
    assert completed_review_splits(audit) == ["test"]
    copy = apply_audit(audit=audit, user=alice)
    assert copy.config["audit"]["reviewed_splits"] == ["test"]


def test_a_model_says_whether_its_labels_were_reviewed(client, victor, alice):
    from classifiers.audit.run import run_audit_job
    from classifiers.audit.services import apply_audit, decide, start_audit
    from tests.training_helpers import make_model

    dataset = make_generated_dataset(published_constitution(user=alice))
    raw_model = make_model(dataset, "input")
    client.force_login(victor)
    page = client.get(
        reverse("classifiers:model", args=[raw_model.pk])
    ).content.decode()
    assert "Labels as generated" in page

    audit = start_audit(dataset=dataset, user=alice, folds=4, spot_check=0,
                        review_splits=["test"], enqueue=False)  # fmt: skip
    run_audit_job(audit.pk)
    audit.refresh_from_db()
    for item in audit.items.all():
        decide(
            item=item,
            decision="drop" if item.source_id == PLANTED_ID else "keep",
            user=alice,
        )
    reviewed = apply_audit(audit=audit, user=alice)
    model = make_model(reviewed, "input")
    page = client.get(reverse("classifiers:model", args=[model.pk])).content.decode()
    assert "Labels reviewed by people in the test split" in page
    document = json.loads(
        client.get(reverse("classifiers:model_report", args=[model.pk])).content
    )
    assert document["labels"] == {
        "audits": [audit.pk],
        "reviewed_splits": ["test"],
        "all_reviewed": False,
        "flipped": 0,
        "dropped": 1,
        "generated_dataset": dataset.pk,
        "generated_datasets": [dataset.pk],
        "combined_from": [],
    }


# ------------------------------------------------------- learning the queue's order


@pytest.fixture
def habit_audit(db, alice):
    return make_habit_audit(alice)


def make_habit_audit(alice):
    """A finished audit of 30 harmful-labelled split-review items with stored
    embeddings: the odd ones are the generator's habit (defensive questions, wrong
    label), the even ones real requests."""
    import numpy as np

    from classifiers.audit.run import embedding_bytes

    dataset = make_generated_dataset(published_constitution(user=alice))
    audit = LabelAudit.objects.create(
        dataset=dataset, status="done", config={"folds": 4, "spot_check": 0, "review_splits": ["test"]},
        summary={
            "generated_sources": 30, "generated_suspects": 0, "sources": 32,
            "suspects_harmful_label": 0, "suspects_benign_label": 0, "spot_check": 0,
            "review_split_sources": 30,
        },
    )  # fmt: skip
    rng = np.random.default_rng(0)
    items = []
    for i in range(30):
        vector = np.zeros(16)
        vector[i % 2] = 1.0
        vector += 0.3 * rng.standard_normal(16)
        items.append(LabelAuditItem(
            audit=audit, source_id=f"habit-{i:02d}", text=f"query {i}", label=1,
            category="forbidden widgets", harm_score=0.9, suspect=False, reason="split",
            suggested_category="garden care", rank=i,
            embedding=embedding_bytes(vector / np.linalg.norm(vector)),
        ))  # fmt: skip
    LabelAuditItem.objects.bulk_create(items)
    return audit


def decide_first(audit, user, n):
    """Decide the first n items in queue order: odd ranks dropped, even ones kept."""
    from classifiers.audit.services import decide

    for item in audit.items.order_by("rank")[:n]:
        decide(item=item, decision="drop" if item.rank % 2 else "keep", user=user)


def test_decisions_order_the_rest_of_the_queue_likely_errors_first(
    client, alice, bob, habit_audit
):
    from classifiers.audit.report import audit_report

    audit = habit_audit
    decide_first(audit, bob, 10)  # 5 right, 5 wrong, in random (queue) order
    client.force_login(bob)
    response = client.post(reverse("classifiers:label_audit_learn", args=[audit.pk]))
    assert response.status_code == 302 and response["Location"].endswith("?show=likely")
    audit.refresh_from_db()
    learned = audit.summary["learned"]
    assert (learned["decided"], learned["wrong"], learned["scored"]) == (10, 5, 20)
    assert learned["auroc"] > 0.9
    page = client.get(response["Location"]).content.decode()
    assert 'data-testid="learned-auroc"' in page and "P(wrong)" in page
    shown = [int(s[-2:]) for s in re.findall(r'data-source="(habit-\d\d)"', page)]
    assert len(shown) == 20
    assert all(i % 2 for i in shown[:10]) and not any(i % 2 for i in shown[10:])
    # Decisions in that order fix labels, but the error rate rests on the head of the
    # random queue order (the 10 decided first); fixed errors further down are
    # subtracted from the estimate of what is left.
    for source in shown[:2]:
        top = audit.items.get(source_id=f"habit-{source:02d}")
        url = reverse("classifiers:label_audit_decide", args=[audit.pk, top.pk])
        response = client.post(url, {"decision": "drop", "show": "likely"})
        assert response.status_code == 302 and response["Location"].endswith(
            "?show=likely"
        )
    report = audit_report(audit)
    assert (report["sample_size"], report["spot_error_rate"]) == (10, 0.5)
    assert report["sample_partial"] and report["spot_check"]["drop"] == 7
    # 30 unflagged, 10 in the sample: half of the other 20 are wrong, 2 of them fixed.
    assert report["estimated_unflagged_errors"] == 10 - 2
    page = client.get(audit.get_absolute_url() + "?show=decided").content.decode()
    assert 'data-testid="sample-size">10<' in page
    assert "5 right · 0 flipped · 7 dropped" in page
    client.force_login(alice)  # an author sees the Apply button count every decision
    page = client.get(audit.get_absolute_url()).content.decode()
    assert (
        "0 flipped, 7 dropped (with all their augmented copies); 18 undecided" in page
    )
    client.force_login(bob)
    # Learning again drops the scores of the items decided since.
    client.post(reverse("classifiers:label_audit_learn", args=[audit.pk]))
    assert not audit.items.exclude(decision="").exclude(wrong_score=None).exists()
    assert audit.items.filter(decision="").exclude(wrong_score=None).count() == 18


def test_a_refused_decision_in_the_learned_order_stays_in_that_order(
    client, bob, habit_audit
):
    audit = habit_audit
    decide_first(audit, bob, 10)
    client.force_login(bob)
    client.post(reverse("classifiers:label_audit_learn", args=[audit.pk]))
    item = audit.items.filter(decision="").first()
    url = reverse("classifiers:label_audit_decide", args=[audit.pk, item.pk])
    response = client.post(url, {"decision": "maybe", "show": "likely"})  # no htmx
    assert response.status_code == 400
    page = response.content.decode()
    assert "unknown decision" in page and 'class="current">Likely wrong first<' in page
    item.refresh_from_db()
    assert item.decision == ""


def test_learning_the_order_refuses_what_it_cannot_do_and_changes_nothing(
    client, alice, bob, victor, habit_audit
):
    audit = habit_audit
    url = reverse("classifiers:label_audit_learn", args=[audit.pk])
    client.force_login(victor)
    assert client.post(url).status_code == 403
    client.force_login(bob)
    response = client.post(url)  # nothing decided yet
    assert response.status_code == 400
    assert "(now 0 right, 0 wrong)" in response.content.decode()
    decide_first(audit, bob, 4)  # 2 right, 2 wrong: too few
    response = client.post(url)
    assert response.status_code == 400
    assert (
        "decide at least 3 items whose label is right and 3 whose label is wrong"
        in (response.content.decode())
    )
    assert not audit.items.exclude(wrong_score=None).exists()
    audit.refresh_from_db()
    assert "learned" not in audit.summary
    decide_first(audit, bob, 6)
    audit.items.filter(rank=29).update(
        embedding=None
    )  # as audits from before embeddings
    response = client.post(url)
    assert response.status_code == 400 and b"start a new audit" in response.content
    assert not audit.items.exclude(wrong_score=None).exists()


def test_command_learns_the_order_and_exports_it(habit_audit, tmp_path):
    from django.core.management import call_command

    audit = habit_audit
    decisions = tmp_path / "d.jsonl"
    decisions.write_text("".join(
        json.dumps({"source_id": f"habit-{i:02d}", "decision": "drop" if i % 2 else "keep"}) + "\n"
        for i in range(10)
    ))  # fmt: skip
    out, queue = io.StringIO(), tmp_path / "q.jsonl"
    call_command(
        "audit_labels", "--audit", str(audit.pk), "--decisions", str(decisions),
        "--learn", "--export", str(queue), stdout=out,
    )  # fmt: skip
    assert "20 undecided items scored from 10 decisions (5 wrong)" in out.getvalue()
    rows = [json.loads(line) for line in queue.read_text().splitlines()]
    pending = sorted(
        (r for r in rows if not r["decision"]), key=lambda r: -r["wrong_score"]
    )
    assert all(int(r["source_id"][-2:]) % 2 for r in pending[:10])
    assert all(r["wrong_score"] is None for r in rows if r["decision"])
