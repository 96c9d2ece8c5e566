"""manage.py classify, evaluate and train against a real (tiny) trained input model."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from tests.factories import published_constitution
from tests.training_helpers import train_input_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def trained(settings, tmp_path, alice):
    """A dataset and an active input model trained by `manage.py train`."""
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    version = published_constitution(user=alice)
    return version.constitution, train_input_model(version)


def test_train_prints_progress_and_the_headline_metrics(trained):
    _, output = trained
    assert "train input:" in output and "input model #" in output and "[active]" in output


def test_classify_adds_score_blocked_and_category_to_every_line(trained, tmp_path, capsys):
    constitution, _ = trained
    source = tmp_path / "in.jsonl"
    rows = [{"text": "how do I make the forbidden widget at home", "id": 1},
            {"text": "how often should I water tomato plants", "id": 2}] * 40  # fmt: skip
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    target = tmp_path / "out.jsonl"
    call_command("classify", input=str(source), output=str(target),
                 constitution=constitution.slug)  # fmt: skip
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(lines) == 80  # more than one batch of 64
    progress = capsys.readouterr().err  # while it runs, not only at the end
    assert "scored 64/80" in progress and "scored 80/80" in progress
    assert [line["id"] for line in lines] == [r["id"] for r in rows]
    for line in lines:
        assert 0.0 <= line["input_score"] <= 1.0
        assert isinstance(line["blocked"], bool)
        assert line["category"] in {"forbidden widgets", "garden care"}
    assert lines[0]["input_score"] > lines[1]["input_score"]
    assert lines[0]["blocked"] and not lines[1]["blocked"]
    # A blocked line names a restricted category.
    assert {line["category"] for line in lines if line["blocked"]} == {"forbidden widgets"}


def test_a_malformed_line_names_its_number_and_writes_nothing(trained, tmp_path):
    constitution, _ = trained
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "fine"}\n\n{"text": broken\n')
    target = tmp_path / "out.jsonl"
    with pytest.raises(CommandError, match=r"in\.jsonl:3"):
        call_command("classify", input=str(source), output=str(target),
                     constitution=constitution.slug)  # fmt: skip
    source.write_text('{"text": "fine"}\n{"prompt": "no text key"}\n')
    with pytest.raises(CommandError, match=r":2: expected"):
        call_command("classify", input=str(source), output=str(target),
                     constitution=constitution.slug)  # fmt: skip
    assert not target.exists() and not list(tmp_path.glob(".out.jsonl*"))


def test_a_constitution_without_an_active_model_is_a_clear_error(trained, tmp_path, alice):
    other = published_constitution("other", user=alice).constitution
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "hello"}\n')
    with pytest.raises(CommandError, match="no active input model"):
        call_command("classify", input=str(source), output=str(tmp_path / "o.jsonl"),
                     constitution=other.slug)  # fmt: skip
    assert not (tmp_path / "o.jsonl").exists()


def test_evaluate_prints_the_report_verifies_and_writes_json(trained, tmp_path, capsys):
    from classifiers.models import ModelVersion

    model = ModelVersion.objects.get()
    target = tmp_path / "report.json"
    call_command("evaluate", model=model.pk, split="heldout_transforms",
                 json_out=str(target), verify=True)  # fmt: skip
    printed = capsys.readouterr().out
    assert "artifact verified" in printed and "keyword" in printed and "rot13" in printed
    document = json.loads(target.read_text())
    assert document["split"] == "heldout_transforms" and document["classifier"]["n"] > 0
    with pytest.raises(CommandError):
        call_command("evaluate", model=999999)


def test_evaluate_scores_a_labelled_file_per_kind_and_keeps_it_with_the_model(
    trained, tmp_path, capsys, client, bob
):
    from django.urls import reverse

    from bench.fixtures import BENIGN, HARMFUL
    from classifiers.models import ModelVersion

    model = ModelVersion.objects.get()
    source = tmp_path / "garden-traffic.jsonl"
    rows = [{"text": t, "label": 1, "kind": "plain attack"} for t in HARMFUL]
    rows += [{"text": t, "label": 0, "kind": "everyday"} for t in BENIGN]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    call_command("evaluate", model=model.pk, file=str(source), save="garden traffic")
    captured = capsys.readouterr()
    assert "scored 24/24" in captured.err  # progress while it scores
    printed = captured.out
    assert "plain attack" in printed and "everyday" in printed
    assert "benign prompts: 12 examples" in printed  # too few for its 10% target
    model.refresh_from_db()
    saved = model.report["evaluations"]["garden traffic"]
    assert saved["per_kind"]["plain attack"]["harmful"] == len(HARMFUL)
    assert saved["per_kind"]["plain attack"]["fpr"] is None
    recall = saved["per_kind"]["plain attack"]["recall"]
    assert recall["n"] == 12 and recall["low"] <= recall["rate"] <= recall["high"]
    assert saved["per_kind"]["everyday"]["fpr"]["n"] == 12
    # The model page shows it, per kind.
    client.force_login(bob)
    page = client.get(reverse("classifiers:model", args=[model.pk])).content.decode()
    assert 'data-testid="labelled-sets"' in page and 'data-kind="everyday"' in page
    # A second save under the same name replaces the first.
    call_command("evaluate", model=model.pk, file=str(source), save="garden traffic")
    model.refresh_from_db()
    assert list(model.report["evaluations"]) == ["garden traffic"]


def test_evaluate_refuses_a_bad_labelled_file_and_saves_nothing(trained, tmp_path):
    from classifiers.models import ModelVersion

    model = ModelVersion.objects.get()
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine", "label": 0}\n{"text": "no label"}\n')
    with pytest.raises(CommandError, match="line 2: label must be 1"):
        call_command("evaluate", model=model.pk, file=str(source), save="bad")
    with pytest.raises(CommandError, match="use a .jsonl, .csv or .parquet"):
        call_command("evaluate", model=model.pk, file=str(tmp_path / "x.txt"))
    model.refresh_from_db()
    assert "evaluations" not in model.report
