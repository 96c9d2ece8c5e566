"""Traffic pools on the ML side: cleaning, stable splits, examples, replies."""

from __future__ import annotations

from collections import Counter

import pytest

from classifiers.ml.data.prompts import GenerateConfig
from classifiers.ml.data.traffic import (
    POOL_SPLITS,
    add_responses,
    pool_category,
    pool_examples,
    prepare_pool,
    sample_per_split,
    split_for,
    text_hash,
)
from classifiers.ml.eval.labelled_sets import LabelledPrompt

TOPICS = ["a birthday cake", "a trip to Lisbon", "a python list", "my tomato plants",
          "a cover letter", "the French revolution", "a marathon plan", "a wool scarf"]  # fmt: skip
ASKS = ["How do I start with", "Give me tips about", "What should I know about",
        "Can you explain", "Help me plan", "Write a short note on"]  # fmt: skip


def everyday(n: int) -> list[LabelledPrompt]:
    prompts = []
    for i in range(n):
        topic, ask = TOPICS[i % len(TOPICS)], ASKS[(i // len(TOPICS)) % len(ASKS)]
        prompts.append(LabelledPrompt(f"{ask} {topic}, case {i} of {n}?", 0, "everyday"))
    return prompts


def test_exact_and_near_duplicates_are_dropped_and_counted():
    prompts = [
        LabelledPrompt("How do I bake sourdough bread at home?", 0, "everyday"),
        LabelledPrompt("  how do I bake   sourdough bread at home?  ", 0, "everyday"),
        LabelledPrompt("How do I bake sourdough bread at home, please?", 0, "everyday"),
        LabelledPrompt("What is the capital of Portugal?", 0, "everyday"),
        LabelledPrompt("   ", 0, "everyday"),
    ]
    pool = prepare_pool(prompts)
    assert [p.text for p in pool.prompts] == [
        "How do I bake sourdough bread at home?", "What is the capital of Portugal?",
    ]  # fmt: skip
    assert pool.stats["read"] == 5 and pool.stats["kept"] == 2
    assert pool.stats["dropped"] == {"duplicate": 1, "near duplicate": 1, "empty": 1}


def test_a_prompt_keeps_its_split_in_every_pool_and_splits_follow_the_shares():
    prompts = everyday(4000)
    first = prepare_pool(prompts, near_duplicates=False)
    again = prepare_pool(list(reversed(prompts)), near_duplicates=False)
    assert {p.text: p.split for p in first.prompts} == {p.text: p.split for p in again.prompts}
    shares = Counter(p.split for p in first.prompts)
    for split, share in POOL_SPLITS.items():
        assert shares[split] / len(first.prompts) == pytest.approx(share, abs=0.03)
    assert split_for(text_hash("What is the capital of Portugal?")) in POOL_SPLITS


def test_prompts_the_pool_already_holds_are_skipped():
    prompts = everyday(20)
    known = frozenset(text_hash(p.text) for p in prompts[:5])
    pool = prepare_pool(prompts, known_hashes=known)
    assert pool.stats["kept"] == 15 and pool.stats["dropped"] == {"duplicate": 5}


def test_pool_examples_are_benign_in_their_own_split_with_a_row_per_pool():
    pool = prepare_pool(everyday(10) + [LabelledPrompt("a reviewed attack", 1, "shadow")])
    examples = pool_examples(pool.prompts, pool_name="support desk")
    assert len(examples) == 11
    assert {e.category for e in examples} == {pool_category("support desk")}
    assert [e.meta["split"] for e in examples] == [p.split for p in pool.prompts]
    assert [e.label for e in examples].count(1) == 1
    assert len({e.source_id for e in examples}) == 11
    with pytest.raises(ValueError):
        pool_examples(pool.prompts, pool_name="x", responses=["only one"])


def test_sampling_a_big_pool_keeps_the_split_shares_and_is_deterministic():
    prompts = prepare_pool(everyday(3000)).prompts
    chosen = sample_per_split(prompts, 600, seed=3)
    assert len(chosen) <= 600 and len(chosen) >= 590
    assert chosen == sample_per_split(prompts, 600, seed=3)
    assert chosen != sample_per_split(prompts, 600, seed=4)
    calibration = sum(p.split == "calibration" for p in chosen) / len(chosen)
    assert calibration == pytest.approx(POOL_SPLITS["calibration"], abs=0.04)
    assert sample_per_split(prompts[:10], 600) == prompts[:10]


class EchoGenerator:
    """Replies 'Sure: <prompt>' except to the first prompt, where it stammers."""

    def chat(self, conversations, *, max_new_tokens, temperature, top_p, seed=None):
        replies = []
        for conversation in conversations:
            content = conversation[-1]["content"]
            replies.append("uh" if "case 0 " in content else f"Sure, here is help with: {content}")
        return replies


def test_replies_are_generated_for_pool_prompts_and_a_degenerate_one_is_dropped():
    examples = pool_examples(prepare_pool(everyday(6)).prompts, pool_name="p")
    seen = []
    filled = add_responses(
        examples, EchoGenerator(), GenerateConfig(batch_size=4),
        on_progress=lambda **kw: seen.append((kw["done"], kw["total"])),
    )  # fmt: skip
    assert filled == 5
    assert seen == [(4, 6), (6, 6)]
    stammer = next(e for e in examples if "case 0 " in e.prompt_text)
    assert stammer.response == "" and stammer.meta["response_dropped"] == "degenerate"
    assert all(e.meta["response_label"] == 0 for e in examples if e.response)


def test_take_per_split_takes_exactly_the_count_in_proportion_and_the_same_each_time():
    from classifiers.ml.data.traffic import take_per_split

    items = [(f"{i:03d}", "train" if i % 10 < 4 else "calibration" if i % 10 < 8 else "test")
             for i in range(30)]  # fmt: skip
    spread = {"split_of": lambda item: item[1], "order_of": lambda item: item[0][::-1]}
    for count in (0, 1, 7, 10, 29):
        taken, rest = take_per_split(items, count, **spread)
        assert len(taken) == count and sorted(taken + rest) == sorted(items)
        assert taken == take_per_split(items, count, **spread)[0]
    taken, _ = take_per_split(items, 10, **spread)
    assert [s for _, s in taken].count("test") == 2  # 6 of 30 are test: 2 of 10
    assert take_per_split(items, 99, **spread) == (items, [])
