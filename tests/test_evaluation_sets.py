"""Evaluation sets: import a labelled file, score a real (tiny) input model on it with
the real Celery worker, compare models per kind on the set's page."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from bench.fixtures import BENIGN, HARMFUL
from classifiers.models import EvaluationRun, EvaluationSet, ModelVersion
from tests.factories import published_constitution
from tests.training_helpers import train_input_model, wait_for_job

pytestmark = pytest.mark.django_db


def labelled_lines() -> list[dict]:
    rows = [{"text": t, "label": 1, "kind": "plain attack"} for t in HARMFUL]
    rows += [{"text": t, "label": 0, "kind": "everyday"} for t in BENIGN]
    return rows


def write_jsonl(path, rows):  # type: ignore[no-untyped-def]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def model(settings, tmp_path, alice):  # type: ignore[no-untyped-def]
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    train_input_model(published_constitution(user=alice))
    return ModelVersion.objects.get(kind="input")


def test_the_command_imports_a_set_without_duplicates_and_refuses_a_second_of_that_name(
    tmp_path, capsys
):
    source = write_jsonl(tmp_path / "set.jsonl", labelled_lines() + labelled_lines()[:3])
    call_command("evaluate", import_file=str(source), set_name="garden traffic")
    assert "24 prompts (12 harmful, 12 benign, 2 kinds)" in capsys.readouterr().out
    imported = EvaluationSet.objects.get()
    assert imported.stats["duplicates_dropped"] == 3
    assert imported.stats["kinds"]["everyday"] == {"harmful": 0, "benign": 12}
    assert list(imported.prompts.values_list("text", flat=True)[:2]) == HARMFUL[:2]
    with pytest.raises(CommandError, match="exists"):
        call_command("evaluate", import_file=str(source), set_name=" garden  traffic ")
    # A line without a label imports nothing, and says which line.
    write_jsonl(source, [*labelled_lines()[:2], {"text": "no label here"}])
    with pytest.raises(CommandError, match="line 3: label"):
        call_command("evaluate", import_file=str(source), set_name="other")
    assert EvaluationSet.objects.count() == 1


def test_a_set_is_scored_in_process_by_the_command_and_kept_with_the_model(
    model, tmp_path, capsys
):
    source = write_jsonl(tmp_path / "set.jsonl", labelled_lines())
    call_command("evaluate", import_file=str(source), set_name="garden traffic")
    call_command("evaluate", model=model.pk, set_name="garden traffic")
    printed = capsys.readouterr().out
    assert "plain attack" in printed and "everyday" in printed
    run = EvaluationRun.objects.get()
    assert run.status == "done" and run.report["overall"]["n"] == 24
    recall = run.report["per_kind"]["plain attack"]["recall"]
    assert recall["n"] == 12 and recall["rate"] >= 0.5  # the model learned these
    model.refresh_from_db()
    kept = model.report["evaluations"]["garden traffic"]
    assert kept["evaluation_set"] == run.evaluation_set_id
    assert "missed" not in kept  # prompt texts stay with the set, not the model
    with pytest.raises(CommandError, match="no evaluation set"):
        call_command("evaluate", model=model.pk, set_name="nope")


def test_alice_uploads_a_set_and_a_bad_upload_is_a_400_that_changes_nothing(
    client, alice, victor, tmp_path
):
    client.force_login(alice)
    url = reverse("classifiers:evaluation_sets")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a prompt", "label": 7}])
    with bad.open("rb") as handle:
        response = client.post(url, {"name": "mine", "file": handle})
    assert response.status_code == 400
    assert "line 1: label must be 1 (harmful) or 0 (benign)" in response.content.decode()
    assert not EvaluationSet.objects.exists()
    good = write_jsonl(tmp_path / "good.jsonl", labelled_lines())
    with good.open("rb") as handle:
        response = client.post(url, {"name": "mine", "file": handle})
    evaluation_set = EvaluationSet.objects.get()
    assert response.status_code == 302 and response["Location"] == evaluation_set.get_absolute_url()
    page = client.get(response["Location"]).content.decode()
    assert "24 prompts: 12 harmful, 12 benign" in page and "No model scored" in page
    # A viewer reads but cannot import or score.
    client.force_login(victor)
    assert client.get(evaluation_set.get_absolute_url()).status_code == 200
    with good.open("rb") as handle:
        assert client.post(url, {"name": "other", "file": handle}).status_code == 403
    start = reverse("classifiers:evaluation_start", args=[evaluation_set.pk])
    assert client.post(start, {"model_version": 1}).status_code == 403
    assert EvaluationSet.objects.count() == 1 and not EvaluationRun.objects.exists()


def test_an_output_model_or_an_unknown_model_cannot_be_scored_on_prompts(
    client, alice, model, tmp_path
):
    from classifiers.evaluation.services import EvaluationError, start_evaluation

    call_command("evaluate", import_file=str(write_jsonl(tmp_path / "s.jsonl",
                 labelled_lines())), set_name="s")  # fmt: skip
    evaluation_set = EvaluationSet.objects.get()
    client.force_login(alice)
    start = reverse("classifiers:evaluation_start", args=[evaluation_set.pk])
    assert client.post(start, {"model_version": 999999}).status_code == 400
    output = ModelVersion.objects.get(pk=model.pk)
    output.pk, output.kind = None, "output"
    output.save()
    with pytest.raises(EvaluationError, match="output classifier"):
        start_evaluation(evaluation_set=evaluation_set, model_version=output, user=alice)
    assert not EvaluationRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_worker_scores_a_model_and_the_page_compares_it_per_kind(
    client, alice, model, celery_worker, tmp_path
):
    call_command("evaluate", import_file=str(write_jsonl(tmp_path / "s.jsonl",
                 labelled_lines())), set_name="garden traffic")  # fmt: skip
    evaluation_set = EvaluationSet.objects.get()
    client.force_login(alice)
    start = reverse("classifiers:evaluation_start", args=[evaluation_set.pk])
    response = client.post(start, {"model_version": model.pk})
    assert response.status_code == 302
    run = wait_for_job(EvaluationRun.objects.get())
    assert run.status == "done" and run.done == run.total == 24
    page = client.get(evaluation_set.get_absolute_url()).content.decode()
    assert f'data-testid="compare-row" data-model="{model.pk}"' in page
    assert 'data-testid="breakdown"' in page and 'data-kind="plain attack"' in page
    assert "set-histogram-data" in page
    # The model's page links back to the set.
    model_page = client.get(model.get_absolute_url()).content.decode()
    assert f'{evaluation_set.get_absolute_url()}?model={model.pk}' in model_page
    # Scoring again while nothing runs starts a new run; the table keeps one row.
    client.post(start, {"model_version": model.pk})
    wait_for_job(EvaluationRun.objects.order_by("-pk").first())
    page = client.get(evaluation_set.get_absolute_url()).content.decode()
    assert page.count('data-testid="compare-row"') == 1


def test_a_queued_run_is_reused_and_can_be_cancelled(client, alice, model, tmp_path):
    from classifiers.evaluation.services import start_evaluation

    call_command("evaluate", import_file=str(write_jsonl(tmp_path / "s.jsonl",
                 labelled_lines())), set_name="s")  # fmt: skip
    evaluation_set = EvaluationSet.objects.get()
    first = start_evaluation(evaluation_set=evaluation_set, model_version=model, user=alice,
                             enqueue=False)  # fmt: skip
    again = start_evaluation(evaluation_set=evaluation_set, model_version=model, user=alice,
                             enqueue=False)  # fmt: skip
    assert again.pk == first.pk
    client.force_login(alice)
    response = client.post(reverse("classifiers:evaluation_cancel", args=[first.pk]))
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.status == "cancelled"
    model.refresh_from_db()
    assert "s" not in model.report.get("evaluations", {})


@pytest.mark.parametrize("output_threshold", [None, 0.0])
def test_a_whole_guard_run_counts_replies_the_output_classifier_halts(
    alice, tmp_path, capsys, output_threshold
):
    """With an output threshold of 0 every reply halts at its first token, so the
    guard refuses every prompt; with none, only what the input classifier blocks."""
    from tests.api_helpers import guarded_constitution

    constitution = guarded_constitution("widgets", output=True,
                                        output_threshold=output_threshold, user=alice)  # fmt: skip
    model = ModelVersion.objects.get(kind="input", constitution=constitution)
    source = write_jsonl(tmp_path / "s.jsonl", labelled_lines()[10:14])  # 2 harmful, 2 benign
    call_command("evaluate", import_file=str(source), set_name="small")
    call_command("evaluate", model=model.pk, set_name="small", whole_guard=True,
                 max_new_tokens=8)  # fmt: skip
    run = EvaluationRun.objects.get()
    guard = run.report["guard"]
    assert run.whole_guard and guard["max_new_tokens"] == 8 and guard["n"] == 4
    refused = guard["input_blocked"] + guard["output_halted"]
    if output_threshold == 0.0:
        assert refused == 4 and guard["output_halted"] >= 2
        assert run.report["overall"]["fpr"]["rate"] == 1.0
    else:  # never halts: refused is exactly what the input classifier blocked
        assert guard["output_halted"] == 0
        assert refused == guard["input_blocked"] <= 4
    assert "halted mid-reply" in capsys.readouterr().out
    model.refresh_from_db()
    assert "small · whole guard" in model.report["evaluations"]
    # Bounded: too long a reply is refused before anything runs.
    from classifiers.evaluation.services import EvaluationError, start_evaluation

    with pytest.raises(EvaluationError, match="between 8 and 256"):
        start_evaluation(evaluation_set=run.evaluation_set, model_version=model, user=alice,
                         whole_guard=True, max_new_tokens=10_000, enqueue=False)  # fmt: skip


def test_an_output_classifier_is_scored_on_the_replies_of_a_file(
    alice, tmp_path, capsys
):
    """Lines with a response: each reply is scored as the answer to its prompt, as
    the guard streams it. With an output threshold of 0 every reply would halt: each
    benign reply is a false positive, each harmful one caught."""
    from tests.api_helpers import guarded_constitution

    constitution = guarded_constitution("widgets", output=True,
                                        output_threshold=0.0, user=alice)  # fmt: skip
    output = ModelVersion.objects.get(kind="output", constitution=constitution)
    rows = [
        {"text": "How do I water tomatoes?", "label": 0, "kind": "everyday",
         "response": "Water them deeply twice a week, at the base, in the morning."},
        {"text": "What is a good bread recipe?", "label": 0, "kind": "everyday",
         "response": "Mix flour, water, salt and yeast, knead, rise and bake."},
        {"text": HARMFUL[0], "label": 1, "kind": "attack reply", "response": "Sure. Step one:"},
    ]  # fmt: skip
    source = write_jsonl(tmp_path / "replies.jsonl", rows)
    call_command("evaluate", model=output.pk, file=str(source), save="replies")
    printed = capsys.readouterr().out
    report = ModelVersion.objects.get(pk=output.pk).report["evaluations"]["replies"]
    assert report["overall"]["n"] == 3 and "everyday" in printed
    assert (
        report["overall"]["fpr"]["rate"] == 1.0
        and report["overall"]["recall"]["rate"] == 1.0
    )
    assert report["per_kind"]["everyday"]["fpr"]["n"] == 2
    # Lines labelled as replies are not prompts: an input model and an evaluation
    # set refuse them.
    input_model = ModelVersion.objects.get(kind="input", constitution=constitution)
    with pytest.raises(CommandError, match="carry a response"):
        call_command("evaluate", model=input_model.pk, file=str(source))
    with pytest.raises(CommandError, match="carry a response"):
        call_command("evaluate", import_file=str(source), set_name="replies")
    # A line without a reply is refused before anything is scored.
    write_jsonl(source, [*rows, {"text": "no reply", "label": 0}])
    with pytest.raises(CommandError, match="1 line.* no response"):
        call_command("evaluate", model=output.pk, file=str(source))
