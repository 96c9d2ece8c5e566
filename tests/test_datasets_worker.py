"""Dataset builds through the REAL Celery worker (and, once, the real SmolLM2)."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from classifiers.datasets import generators, run
from classifiers.datasets.config import generate_config
from classifiers.datasets.services import dataset_start
from classifiers.ml.data.splits import HELDOUT_SPLIT, SPLITS
from classifiers.models import Dataset, GeneratorEndpoint, JailbreakTemplate
from tests.datasets_helpers import FakeGenerator, start_data
from tests.factories import SHOP, published_constitution
from tests.training_helpers import wait_for_job


def test_a_run_through_the_real_worker_and_smollm2_saves_a_split_dataset(
    celery_worker, alice
):  # type: ignore[no-untyped-def]
    version = published_constitution(user=alice, categories=SHOP, queries=1)  # 1 author query per category
    # Tiny on purpose (the box is shared): 1 generated query per category, short
    # replies, few rounds, no responses (the response path runs in the fake-generator
    # tests). The form-to-queue path is covered by the view tests.
    config = generate_config(
        per_category=2, transforms=["base64", "rot13"], heldout_families=["encoding"],
        max_new_tokens_query=14, responses=False, max_rounds=2,
    )  # fmt: skip
    dataset_start(version=version, config=config, user=alice)
    dataset = wait_for_job(Dataset.objects.get(), timeout=240)
    assert dataset.status == "done", dataset.error
    examples = list(dataset.examples.all())
    assert examples
    assert {(e.category, e.label) for e in examples} == {
        ("Forbidden widgets", 1), ("Widget care", 0)
    }  # fmt: skip
    prompts = {e.prompt_text for e in examples}
    assert "how do I make the forbidden widget" in prompts  # author examples kept
    # The model may waste both rounds on rejects; when it did not, its queries count.
    if dataset.counts["stats"].get("shortfall", 0) < 2:
        assert any(e.meta.get("source") == "generated" for e in examples)
    assert {e.transform for e in examples} >= {"original"}
    assert any(e.transform in ("base64", "rot13") for e in examples)
    # Variants of the held-out family live only in the held-out split ...
    for e in examples:
        assert (e.split == HELDOUT_SPLIT) == (e.transform != "original"), e
    # ... and each source query sits in exactly one of the ordinary splits.
    splits_of: dict[str, set[str]] = defaultdict(set)
    for e in examples:
        if e.split in SPLITS:
            splits_of[e.source_id].add(e.split)
    assert splits_of and all(len(s) == 1 for s in splits_of.values())
    assert dataset.counts["total"] == len(examples)
    assert sum(dataset.counts["split"].values()) == len(examples)
    assert dataset.counts["category_label"]["Forbidden widgets"]["1"] > 0
    assert dataset.stage == "saving" and dataset.done == dataset.total


def test_alice_cancels_a_running_generation_and_no_examples_are_kept(
    celery_worker, client, alice, monkeypatch
):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(generators, "local_generator", lambda: FakeGenerator(delay=0.4))
    version = published_constitution(user=alice, categories=SHOP)
    client.force_login(alice)
    client.post(
        reverse("classifiers:dataset_new"), start_data(version, per_category=40)
    )
    dataset = Dataset.objects.get()
    deadline = time.monotonic() + 60
    while dataset.status != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        dataset.refresh_from_db()
    assert dataset.status == "running"
    client.post(reverse("classifiers:dataset_cancel", args=[dataset.pk]))
    dataset = wait_for_job(dataset, timeout=60)
    assert dataset.status == "cancelled"
    assert dataset.examples.count() == 0
    assert not dataset.counts


def test_an_unreachable_endpoint_fails_the_run_with_a_clear_error(celery_worker, alice):  # type: ignore[no-untyped-def]
    endpoint = GeneratorEndpoint.objects.create(
        name="dead", base_url="http://127.0.0.1:9/v1", model="m", max_retries=0,
        timeout_seconds=2,
    )  # fmt: skip
    version = published_constitution(user=alice, categories=SHOP, queries=1)
    config = generate_config(per_category=3, max_new_tokens_query=8)
    dataset = dataset_start(
        version=version, config=config, user=alice, endpoint=endpoint
    )
    dataset = wait_for_job(dataset, timeout=60)
    assert dataset.status == "failed"
    assert "cannot reach http://127.0.0.1:9/v1/chat/completions" in dataset.error
    assert "connection refused" in dataset.error
    assert dataset.examples.count() == 0


def test_an_openai_compatible_endpoint_builds_a_dataset_with_red_teamed_templates(
    celery_worker, alice
):  # type: ignore[no-untyped-def]
    from classifiers.ml.text.frames import SEED_JAILBREAK_TEMPLATES
    from tests.ml.openai_test_server import OpenAITestServer

    class TemplateWriter(FakeGenerator):
        """Writes new templates when asked for one, sentences otherwise."""

        def chat(self, conversations, **kwargs):  # type: ignore[no-untyped-def]
            replies = super().chat(conversations, **kwargs)
            return [
                f"As {r.split('how do I ')[1].rstrip('?')} say: {{request}}"
                if "{request}" in c[-1]["content"]
                else r
                for c, r in zip(conversations, replies, strict=True)
            ]

    with OpenAITestServer(TemplateWriter()) as server:
        endpoint = GeneratorEndpoint.objects.create(
            name="test-server", base_url=server.base_url, model="fake", concurrency=2
        )
        config = generate_config(
            per_category=3, transforms=["redteam_template"], redteam_templates=2
        )
        dataset = dataset_start(
            version=published_constitution(user=alice, categories=SHOP), config=config, user=alice, endpoint=endpoint
        )
        dataset = wait_for_job(dataset, timeout=120)
    assert dataset.status == "done", dataset.error
    assert dataset.generator.startswith("test-server")
    assert server.stats.requests > 0
    assert JailbreakTemplate.objects.filter(source="seed").count() == len(
        SEED_JAILBREAK_TEMPLATES
    )
    generated = JailbreakTemplate.objects.filter(source="generated", dataset=dataset)
    assert generated.count() == 2
    assert dataset.examples.filter(transform="redteam_template").exists()


@pytest.mark.django_db
def test_a_failure_while_saving_keeps_no_half_dataset(alice, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(generators, "local_generator", lambda: FakeGenerator())
    monkeypatch.setattr(run, "SAVE_BATCH", 2)
    real_row = run._example_row
    made = []

    def failing_row(dataset, ex):  # type: ignore[no-untyped-def]
        made.append(ex)
        if len(made) == 5:  # after two batches were inserted
            raise RuntimeError("disk full")
        return real_row(dataset, ex)

    monkeypatch.setattr(run, "_example_row", failing_row)
    config = generate_config(per_category=4, responses=False)
    dataset = dataset_start(
        version=published_constitution(user=alice, categories=SHOP), config=config, user=alice, enqueue=False
    )
    dataset = run.run_dataset(dataset.pk)
    assert dataset.status == "failed"
    assert "disk full" in dataset.error
    assert dataset.examples.count() == 0 and not dataset.counts


@pytest.mark.django_db
def test_the_generate_command_prints_progress_and_counts(alice, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    import io

    monkeypatch.setattr(generators, "local_generator", lambda: FakeGenerator())
    published_constitution("cbrn-demo", user=alice, categories=SHOP)
    out = io.StringIO()
    call_command(
        "generate", "--constitution", "cbrn-demo", "--version", "1",
        "--per-category", "4", "--transforms", "base64,rot13", "--variants", "1",
        "--heldout-families", "encoding", "--seed", "3", "--no-responses",
        stdout=out,
    )  # fmt: skip
    text = out.getvalue()
    dataset = Dataset.objects.get()
    assert dataset.status == "done"
    assert dataset.seed == 3 and dataset.config["responses"] is False
    assert "queries" in text and "ETA" in text
    assert f"dataset #{dataset.pk} done: {dataset.counts['total']} examples" in text
    assert "split: " in text and "heldout_transforms=" in text
    with pytest.raises(CommandError, match="no published version 7"):
        call_command("generate", "--constitution", "cbrn-demo", "--version", "7")
    with pytest.raises(CommandError, match="unknown transform"):
        call_command("generate", "--constitution", "cbrn-demo", "--transforms", "nope")


@pytest.mark.django_db
def test_the_generate_command_takes_split_fractions(alice, monkeypatch):  # type: ignore[no-untyped-def]
    import io

    monkeypatch.setattr(generators, "local_generator", lambda: FakeGenerator())
    published_constitution("cbrn-demo", user=alice, categories=SHOP)
    call_command(
        "generate", "--constitution", "cbrn-demo", "--per-category", "20",
        "--no-responses", "--splits", "train=0.5,validation=0,calibration=0.25,test=0.25",
        stdout=io.StringIO(),
    )  # fmt: skip
    dataset = Dataset.objects.get()
    assert dataset.config["calibration_fraction"] == 0.25
    splits = dataset.counts["split"]
    assert "validation" not in splits
    assert splits["calibration"] == splits["test"] and splits["train"] >= 2 * splits["test"]
    for bad, message in [
        ("train=0.5,test=0.1", "must add up to 1"),
        ("tain=0.5", "unknown split 'tain'"),
        ("train=half", "expected split=fraction"),
    ]:
        with pytest.raises(CommandError, match=message):
            call_command("generate", "--constitution", "cbrn-demo", "--splits", bad)
    with pytest.raises(CommandError, match="prefilled openers must be between 0 and 1"):
        call_command("generate", "--constitution", "cbrn-demo", "--opener-share", "2")
    with pytest.raises(CommandError, match="has no category 'Widgets'"):
        call_command("generate", "--constitution", "cbrn-demo", "--category", "Widgets")
    assert Dataset.objects.count() == 1
