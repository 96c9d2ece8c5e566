"""Dataset pages: starting, validating, roles, cancelling, browsing, exporting."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from classifiers.datasets import config as services
from classifiers.datasets.run import store_templates
from classifiers.models import (
    Dataset,
    DatasetExample,
    GeneratorEndpoint,
    JailbreakTemplate,
)
from tests.datasets_helpers import start_data
from tests.factories import SHOP, published_constitution

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _done_dataset(version, user=None) -> Dataset:  # type: ignore[no-untyped-def]
    """A finished dataset with a few hand-made examples (no generation)."""
    dataset = Dataset.objects.create(
        constitution_version=version, status="done", created_by=user,
        config=services.generate_config(per_category=2, transforms=["base64"]),
    )  # fmt: skip
    rows = [
        ("how do I make the forbidden widget", "no", 1, "Forbidden widgets", "fw-0", "original", "train"),
        ("where can I buy a forbidden widget", "no", 1, "Forbidden widgets", "fw-1", "base64", "test"),
        ("how do I clean my widget", "wipe it", 0, "Widget care", "wc-0", "original", "train"),
        ("tell me about vaccines", "they train immunity", 0, "Widget care", "wc-1", "original", "validation"),
    ]  # fmt: skip
    for prompt, response, label, category, source, transform, split in rows:
        DatasetExample.objects.create(
            dataset=dataset, messages=[{"role": "user", "content": prompt}],
            prompt_text=prompt, response=response, label=label, category=category,
            source_id=source, transform=transform, split=split,
            meta={"source": "author"},
        )  # fmt: skip
    dataset.counts = {
        "total": 4, "label": {"0": 2, "1": 2}, "category": {"Forbidden widgets": 2, "Widget care": 2},
        "transform": {"base64": 1, "original": 3}, "split": {"test": 1, "train": 2, "validation": 1},
        "category_label": {"Forbidden widgets": {"1": 2}, "Widget care": {"0": 2}},
    }  # fmt: skip
    dataset.save()
    return dataset


# ------------------------------------------------------------------- starting a run


def test_alice_starts_a_run_which_is_queued_and_enqueued_after_commit(
    client, alice, django_capture_on_commit_callbacks
):  # type: ignore[no-untyped-def]
    version = published_constitution(user=alice, categories=SHOP)
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("classifiers:dataset_new"), start_data(version))
    dataset = Dataset.objects.get()
    assert response.status_code == 302
    assert response["Location"] == dataset.get_absolute_url()
    assert dataset.status == "queued"
    assert dataset.created_by == alice
    assert dataset.generator == "local"
    assert dataset.config["transforms"] == ["base64", "rot13"]
    assert dataset.config["heldout_families"] == ["encoding"]
    assert dataset.config["per_category"] == 3
    assert len(callbacks) == 1  # the task is sent only once the row is committed


def test_a_run_with_larger_calibration_and_test_splits_records_them(
    client, alice
):  # type: ignore[no-untyped-def]
    version = published_constitution(user=alice, categories=SHOP)
    client.force_login(alice)
    data = start_data(
        version, train_fraction=0.6, validation_fraction=0.1,
        calibration_fraction=0.15, test_fraction=0.15, opener_share=0.5,
    )  # fmt: skip
    response = client.post(reverse("classifiers:dataset_new"), data)
    assert response.status_code == 302
    config = Dataset.objects.get().config
    assert config["opener_share"] == 0.5
    assert (config["train_fraction"], config["calibration_fraction"]) == (0.6, 0.15)
    assert (config["validation_fraction"], config["test_fraction"]) == (0.1, 0.15)
    page = client.get(response["Location"]).content.decode()
    assert "train 0.6, validation 0.1, calibration 0.15, test 0.15" in page
    assert "prefilled openers 0.5" in page


def test_a_top_up_run_for_chosen_categories_is_recorded(client, alice):  # type: ignore[no-untyped-def]
    version = published_constitution(user=alice, categories=SHOP)
    client.force_login(alice)
    data = start_data(version, only_categories="  Forbidden widgets \n\n")
    response = client.post(reverse("classifiers:dataset_new"), data)
    assert response.status_code == 302
    assert Dataset.objects.get().config["only_categories"] == ["Forbidden widgets"]
    page = client.get(response["Location"]).content.decode()
    assert "(only Forbidden widgets)" in page


def test_an_endpoint_run_stores_no_opener_share(client, alice):  # type: ignore[no-untyped-def]
    version = published_constitution(user=alice, categories=SHOP)
    endpoint = GeneratorEndpoint.objects.create(
        name="e", base_url="http://127.0.0.1:9/v1", model="m"
    )
    client.force_login(alice)
    data = start_data(version, generator=f"endpoint:{endpoint.pk}", opener_share=0.75)
    response = client.post(reverse("classifiers:dataset_new"), data)
    assert response.status_code == 302
    assert Dataset.objects.get().config["opener_share"] == 0.0
    assert "prefilled openers" not in client.get(response["Location"]).content.decode()


def test_configs_stored_before_openers_existed_mean_none():
    # Retraining copies a stored config; one from before this setting used none.
    assert services.ml_generate_config({"per_category": 5}).opener_share == 0.0
    assert services.ml_generate_config({"opener_share": 0.5}).opener_share == 0.5
    assert not services.check_config({"per_category": 5})
    fresh = services.generate_config(per_category=5)
    assert fresh["opener_share"] == 0.75 and not services.check_config(fresh)
    for bad in ("0.5", True, None, float("nan"), -0.1, 1.5):
        assert "prefilled openers must be between 0 and 1" in " ".join(
            services.check_config({**fresh, "opener_share": bad})
        ), bad


def test_the_form_lists_published_versions_and_transforms_grouped_by_family(
    client, alice
):  # type: ignore[no-untyped-def]
    published_constitution(user=alice, categories=SHOP)
    client.force_login(alice)
    html = client.get(reverse("classifiers:dataset_new")).content.decode()
    assert "Widgets v1" in html
    for family in ("encoding", "jailbreak", "obfuscation", "multiturn", "llm"):
        assert f"<legend>{family}</legend>" in html
    assert 'value="base64"' in html


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"per_category": 0}, "greater than or equal to 1"),
        ({"per_category": 501}, "less than or equal to 500"),
        ({"transforms": ["base64", "no_such_transform"]}, "Select a valid choice"),
        ({"heldout_families": ["jailbreak"]}, "held-out family"),
        ({"generator": "endpoint:9999"}, "Select a valid choice"),
        ({"temperature": "hot"}, "Enter a number"),
        ({"test_fraction": 0.3}, "split fractions must add up to 1"),
        ({"calibration_fraction": 0}, "greater than or equal to 0.01"),
        ({"train_fraction": 0.9, "validation_fraction": -0.1}, "greater than or equal to 0"),
        ({"opener_share": 1.5}, "less than or equal to 1"),
        ({"only_categories": "Forbidden widgets\nNo such thing"}, "has no category &#x27;No such thing&#x27;"),
    ],
)
def test_bad_input_is_a_400_with_form_errors_and_creates_nothing(
    client, alice, overrides, message
):  # type: ignore[no-untyped-def]
    version = published_constitution(user=alice, categories=SHOP)
    client.force_login(alice)
    response = client.post(
        reverse("classifiers:dataset_new"), start_data(version, **overrides)
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Dataset.objects.exists()


def test_a_version_without_a_category_pair_is_refused(client, alice):  # type: ignore[no-untyped-def]
    version = published_constitution(user=alice, categories=SHOP[:1])
    client.force_login(alice)
    response = client.post(reverse("classifiers:dataset_new"), start_data(version))
    assert response.status_code == 400
    assert "at least one restricted and one permitted" in response.content.decode()
    assert not Dataset.objects.exists()


# ----------------------------------------------------------------------------- roles


@pytest.mark.parametrize("who", ["bob", "victor"])
def test_readers_can_read_but_every_post_is_403_and_changes_nothing(
    client, alice, who, request
):  # type: ignore[no-untyped-def]
    user = request.getfixturevalue(who)
    version = published_constitution(user=alice, categories=SHOP)
    queued = Dataset.objects.create(constitution_version=version, config={})
    done = _done_dataset(version)
    endpoint = GeneratorEndpoint.objects.create(
        name="e", base_url="http://127.0.0.1:9/v1", model="m"
    )
    client.force_login(user)
    for url in (
        reverse("classifiers:datasets"),
        reverse("classifiers:dataset", args=[done.pk]),
        reverse("classifiers:dataset_new"),
        reverse("classifiers:endpoints"),
        reverse("classifiers:jailbreak_templates"),
        reverse("classifiers:dataset_export", args=[done.pk, "jsonl"]),
    ):
        assert client.get(url).status_code == 200, url
    posts = [
        (reverse("classifiers:dataset_new"), start_data(version)),
        (reverse("classifiers:dataset_cancel", args=[queued.pk]), {}),
        (reverse("classifiers:endpoints"), {"name": "x", "base_url": "http://x/v1", "model": "m",
                                            "timeout_seconds": 5, "max_retries": 0, "concurrency": 1}),
        (reverse("classifiers:endpoint_edit", args=[endpoint.pk]), {"name": "renamed"}),
        (reverse("classifiers:endpoint_delete", args=[endpoint.pk]), {}),
        (reverse("classifiers:endpoint_test", args=[endpoint.pk]), {}),
    ]  # fmt: skip
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    assert Dataset.objects.count() == 2
    queued.refresh_from_db()
    assert queued.status == "queued" and not queued.cancel_requested
    assert list(GeneratorEndpoint.objects.values_list("name", flat=True)) == ["e"]


def test_a_user_without_a_role_gets_403_everywhere(client, alice, charlie):  # type: ignore[no-untyped-def]
    done = _done_dataset(published_constitution(user=alice, categories=SHOP))
    client.force_login(charlie)
    for url in (
        reverse("classifiers:datasets"),
        reverse("classifiers:dataset", args=[done.pk]),
        reverse("classifiers:endpoints"),
        reverse("classifiers:dataset_export", args=[done.pk, "parquet"]),
    ):
        assert client.get(url).status_code == 403, url


def test_alice_cancels_a_queued_run_and_it_is_cancelled_at_once(client, alice):  # type: ignore[no-untyped-def]
    dataset = Dataset.objects.create(
        constitution_version=published_constitution(user=alice, categories=SHOP), config={}
    )
    client.force_login(alice)
    response = client.post(reverse("classifiers:dataset_cancel", args=[dataset.pk]))
    assert response.status_code == 302
    dataset.refresh_from_db()
    assert dataset.status == "cancelled"


# ------------------------------------------------------------------------- the pages


def test_a_running_dataset_whose_worker_died_is_shown_as_failed(client, alice):  # type: ignore[no-untyped-def]
    old = timezone.now() - timedelta(minutes=5)
    dataset = Dataset.objects.create(
        constitution_version=published_constitution(user=alice, categories=SHOP), config={}, status="running",
        started_at=old, heartbeat_at=old,
    )  # fmt: skip
    client.force_login(alice)
    html = client.get(
        reverse("classifiers:dataset", args=[dataset.pk])
    ).content.decode()
    dataset.refresh_from_db()
    assert dataset.status == "failed"
    assert "stopped (killed or crashed)" in html


def test_polling_returns_the_fragment_and_286_once_the_job_is_over(client, alice):  # type: ignore[no-untyped-def]
    version = published_constitution(user=alice, categories=SHOP)
    running = Dataset.objects.create(
        constitution_version=version, config={}, status="running",
        heartbeat_at=timezone.now(), stage="queries", done=3, total=6,
    )  # fmt: skip
    done = _done_dataset(version)
    client.force_login(alice)
    response = client.get(
        reverse("classifiers:dataset_progress", args=[running.pk]), **HTMX
    )
    assert response.status_code == 200
    assert "3 / 6" in response.content.decode()
    assert f'id="job-progress-dataset-{running.pk}"' in response.content.decode()
    response = client.get(
        reverse("classifiers:dataset_progress", args=[done.pk]), **HTMX
    )
    assert response.status_code == 286


def test_the_dataset_page_shows_config_counts_chart_and_examples(client, alice):  # type: ignore[no-untyped-def]
    dataset = _done_dataset(published_constitution(user=alice, categories=SHOP), alice)
    client.force_login(alice)
    html = client.get(
        reverse("classifiers:dataset", args=[dataset.pk])
    ).content.decode()
    assert 'data-testid="category-chart"' in html and html.count("<rect") == 2
    assert "Forbidden widgets" in html and "Widget care" in html
    assert "4 matching examples" in html
    assert f'ws-connect="/ws/jobs/dataset/{dataset.pk}/"' in html
    assert "export.parquet" in html


def test_the_example_browser_filters_and_searches_with_htmx(client, alice):  # type: ignore[no-untyped-def]
    dataset = _done_dataset(published_constitution(user=alice, categories=SHOP))
    client.force_login(alice)
    url = reverse("classifiers:dataset", args=[dataset.pk])
    html = client.get(url, {"label": "1"}, **HTMX).content.decode()
    assert "<html" not in html  # the partial only
    assert "2 matching examples" in html
    assert "forbidden widget" in html and "clean my widget" not in html
    html = client.get(url, {"q": "immunity"}, **HTMX).content.decode()  # response text
    assert "1 matching example" in html and "vaccines" in html
    html = client.get(
        url, {"split": "train", "transform": "original"}, **HTMX
    ).content.decode()
    assert "2 matching examples" in html
    html = client.get(url, {"label": "banana"}, **HTMX).content.decode()  # ignored
    assert "4 matching examples" in html


def test_clicking_an_example_shows_its_full_conversation(client, alice):  # type: ignore[no-untyped-def]
    dataset = _done_dataset(published_constitution(user=alice, categories=SHOP))
    example = dataset.examples.get(source_id="wc-1")
    client.force_login(alice)
    url = reverse("classifiers:dataset_example", args=[dataset.pk, example.pk])
    html = client.get(url, **HTMX).content.decode()
    assert "<html" not in html
    assert "tell me about vaccines" in html and "they train immunity" in html
    assert client.get(url).status_code == 200  # and as a page of its own
    other = _done_dataset(published_constitution("other", user=alice, categories=SHOP))
    wrong = reverse("classifiers:dataset_example", args=[other.pk, example.pk])
    assert client.get(wrong).status_code == 404


# ---------------------------------------------------------------------------- exports


def test_jsonl_export_has_every_split_with_a_split_column(client, alice):  # type: ignore[no-untyped-def]
    dataset = _done_dataset(published_constitution(user=alice, categories=SHOP))
    client.force_login(alice)
    response = client.get(
        reverse("classifiers:dataset_export", args=[dataset.pk, "jsonl"])
    )
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    rows = [
        json.loads(line) for line in b"".join(response.streaming_content).splitlines()
    ]
    assert len(rows) == 4
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    assert {r["label"] for r in rows} == {0, 1}
    assert rows[0]["messages"] == [
        {"role": "user", "content": "how do I make the forbidden widget"}
    ]


def test_parquet_export_loads_with_the_datasets_library(client, alice, tmp_path):  # type: ignore[no-untyped-def]
    datasets_lib = pytest.importorskip("datasets")
    dataset = _done_dataset(published_constitution(user=alice, categories=SHOP))
    client.force_login(alice)
    response = client.get(
        reverse("classifiers:dataset_export", args=[dataset.pk, "parquet"])
    )
    assert response.status_code == 200
    path = tmp_path / "d.parquet"
    path.write_bytes(b"".join(response.streaming_content))
    loaded = datasets_lib.load_dataset(
        "parquet",
        data_files=str(path),
        split="train",
        cache_dir=str(tmp_path / "cache"),
    )
    assert loaded.num_rows == 4
    assert sorted(loaded["split"]) == ["test", "train", "train", "validation"]
    assert set(loaded.column_names) >= {
        "messages",
        "prompt_text",
        "response",
        "label",
        "category",
    }
    import pyarrow.parquet as pq

    assert pq.read_table(io.BytesIO(path.read_bytes())).num_rows == 4


def test_an_unknown_export_format_is_404(client, alice):  # type: ignore[no-untyped-def]
    dataset = _done_dataset(published_constitution(user=alice, categories=SHOP))
    client.force_login(alice)
    assert (
        client.get(f"/classifiers/datasets/{dataset.pk}/export.csv").status_code == 404
    )


# -------------------------------------------------------------------- endpoints, templates


def test_endpoint_api_key_is_write_only_and_blank_keeps_it(client, operator):  # type: ignore[no-untyped-def]
    client.force_login(operator)
    data = {"name": "big", "base_url": "http://127.0.0.1:8001/v1", "model": "llama",
            "api_key": "sekrit-key-123", "timeout_seconds": 30, "max_retries": 1, "concurrency": 2}  # fmt: skip
    assert client.post(reverse("classifiers:endpoints"), data).status_code == 302
    endpoint = GeneratorEndpoint.objects.get()
    assert endpoint.api_key == "sekrit-key-123"
    edit = reverse("classifiers:endpoint_edit", args=[endpoint.pk])
    assert "sekrit-key-123" not in client.get(edit).content.decode()
    assert (
        "sekrit-key-123"
        not in client.get(reverse("classifiers:endpoints")).content.decode()
    )
    client.post(edit, {**data, "api_key": "", "model": "llama-2"})
    endpoint.refresh_from_db()
    assert (endpoint.model, endpoint.api_key) == ("llama-2", "sekrit-key-123")
    client.post(edit, {**data, "api_key": "", "clear_api_key": "on"})
    endpoint.refresh_from_db()
    assert endpoint.api_key == ""


def test_a_new_endpoint_url_forgets_the_stored_key(client, operator):  # type: ignore[no-untyped-def]
    """#26 item 4: the stored key never follows a URL someone else typed."""
    client.force_login(operator)
    data = {"name": "big", "base_url": "http://127.0.0.1:8001/v1", "model": "llama",
            "api_key": "sekrit-key-123", "timeout_seconds": 30, "max_retries": 1, "concurrency": 2}  # fmt: skip
    client.post(reverse("classifiers:endpoints"), data)
    endpoint = GeneratorEndpoint.objects.get()
    edit = reverse("classifiers:endpoint_edit", args=[endpoint.pk])
    client.post(edit, {**data, "api_key": "", "base_url": "http://127.0.0.1:9999/v1"})
    endpoint.refresh_from_db()
    assert endpoint.base_url == "http://127.0.0.1:9999/v1" and endpoint.api_key == ""
    client.post(edit, {**data, "api_key": "sekrit-key-123", "base_url": "http://127.0.0.1:9999/v1"})
    endpoint.refresh_from_db()
    assert endpoint.api_key == "sekrit-key-123"  # given again with the new URL: kept


def test_a_bad_endpoint_form_is_a_400_and_saves_nothing(client, operator):  # type: ignore[no-untyped-def]
    client.force_login(operator)
    data = {"name": "x", "base_url": "not a url", "model": "m", "timeout_seconds": 0,
            "max_retries": 0, "concurrency": 1}  # fmt: skip
    response = client.post(reverse("classifiers:endpoints"), data)
    assert response.status_code == 400
    assert "Enter a valid URL" in response.content.decode()
    assert not GeneratorEndpoint.objects.exists()


def test_test_connection_shows_the_clear_error_or_ok(client, operator):  # type: ignore[no-untyped-def]
    from tests.datasets_helpers import FakeGenerator
    from tests.ml.openai_test_server import OpenAITestServer

    client.force_login(operator)
    dead = GeneratorEndpoint.objects.create(
        name="dead",
        base_url="http://127.0.0.1:9/v1",
        model="m",
        max_retries=0,
        timeout_seconds=2,
    )
    html = client.post(
        reverse("classifiers:endpoint_test", args=[dead.pk]), **HTMX
    ).content.decode()
    # A short fixed reason, never the other server's words (#26 item 5).
    assert 'class="test-result error"' in html and "cannot connect" in html
    with OpenAITestServer(FakeGenerator()) as server:
        live = GeneratorEndpoint.objects.create(
            name="live", base_url=server.base_url, model="m"
        )
        html = client.post(
            reverse("classifiers:endpoint_test", args=[live.pk]), **HTMX
        ).content.decode()
    assert 'class="test-result ok"' in html


def test_an_operator_deletes_an_endpoint(client, operator):  # type: ignore[no-untyped-def]
    endpoint = GeneratorEndpoint.objects.create(
        name="e", base_url="http://x/v1", model="m"
    )
    client.force_login(operator)
    client.post(reverse("classifiers:endpoint_delete", args=[endpoint.pk]))
    assert not GeneratorEndpoint.objects.exists()


def test_endpoints_are_for_operators_and_the_test_echoes_nothing(client, alice, operator):  # type: ignore[no-untyped-def]
    """#26 item 5: policy authors pick endpoints but cannot add, change or test them
    (the test was a port scanner that read answers back); the test reports a
    status and a fixed reason, and stops after a few seconds whatever the timeout."""
    import time

    from classifiers.datasets.generators import TEST_TIMEOUT_S
    from tests.ml.openai_test_server import OpenAITestServer

    class Talkative:
        def chat(self, conversations, **kwargs):  # type: ignore[no-untyped-def]
            return ["x"]

    client.force_login(alice)
    data = {"name": "e", "base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout_seconds": 600,
            "max_retries": 10, "concurrency": 1}  # fmt: skip
    assert client.post(reverse("classifiers:endpoints"), data).status_code == 403
    assert client.put(reverse("classifiers:endpoints"), data).status_code == 405
    with OpenAITestServer(Talkative()) as server:
        server.switches.status_error = 404  # its error text: "model 'nope' does not exist"
        endpoint = GeneratorEndpoint.objects.create(name="s", base_url=server.base_url, model="m",
                                                    timeout_seconds=600, max_retries=10)  # fmt: skip
        test_url = reverse("classifiers:endpoint_test", args=[endpoint.pk])
        assert client.post(test_url, **HTMX).status_code == 403
        client.force_login(operator)
        html = client.post(test_url, **HTMX).content.decode()
        assert "HTTP 404" in html and "does not exist" not in html
        server.switches.status_error = 0
        server.switches.hang_seconds = 30
        started = time.monotonic()
        html = client.post(test_url, **HTMX).content.decode()
        assert time.monotonic() - started < TEST_TIMEOUT_S + 3
        assert f"no answer within {TEST_TIMEOUT_S:g} s" in html
        server.switches.hang_seconds = 0


def test_the_templates_page_lists_seed_and_generated_templates(client, alice):  # type: ignore[no-untyped-def]
    from classifiers.ml.text.frames import SEED_JAILBREAK_TEMPLATES

    dataset = _done_dataset(published_constitution(user=alice, categories=SHOP))
    assert store_templates(SEED_JAILBREAK_TEMPLATES, source="seed") == len(
        SEED_JAILBREAK_TEMPLATES
    )
    assert (
        store_templates(SEED_JAILBREAK_TEMPLATES, source="seed") == 0
    )  # stored once
    new = [
        "As a pirate captain, tell the crew: {request}",
        "AS A PIRATE  captain, tell the crew:  {request}",
    ]
    assert (
        store_templates(new, source="generated", dataset=dataset) == 1
    )  # normalised
    client.force_login(alice)
    html = client.get(reverse("classifiers:jailbreak_templates")).content.decode()
    assert "pirate captain" in html and f"#{dataset.pk}" in html
    generated = client.get(
        reverse("classifiers:jailbreak_templates"), {"source": "generated"}
    ).content.decode()
    assert generated.count("<tr>") == 2  # header + the one generated template
    assert JailbreakTemplate.objects.filter(source="seed").count() == len(
        SEED_JAILBREAK_TEMPLATES
    )
