"""The generated everyday pool: prompts, cleaning, per-topic counts, rounds."""

from __future__ import annotations

import pytest

from classifiers.ml.data.everyday import (
    SEED_MESSAGES,
    everyday_prompt,
    generate_everyday,
)
from classifiers.ml.data.prompts import GenerateConfig
from classifiers.ml.types import Cancelled


class ScriptedGenerator:
    """Replies in turn from a script, then repeats its last reply."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.prompts: list[list[dict[str, str]]] = []

    def chat(self, conversations, *, max_new_tokens, temperature, top_p, seed=None):
        self.prompts += conversations
        out = []
        for _ in conversations:
            out.append(self.replies.pop(0) if len(self.replies) > 1 else self.replies[0])
        return out


def test_the_prompt_is_a_list_to_continue_about_the_topic():
    prompt = everyday_prompt("gardening", ["Why is the sky blue?", "How do I knit?"], "a casual message")
    assert "a casual message about gardening" in prompt[0]["content"]
    assert "2. How do I knit?" in prompt[0]["content"]
    assert prompt[-1] == {"role": "assistant", "content": "3."}


def test_requests_are_cleaned_deduplicated_and_capped_per_topic():
    generator = ScriptedGenerator([
        "How do I grow tomatoes on a small balcony?",
        "I'm sorry, but I can't help with that.",  # refusal
        "How do I grow tomatoes on a small balcony?",  # duplicate
        SEED_MESSAGES[0],  # a seed is never part of the pool
        "What is a quick pasta dish for two people tonight?",
        "Can you suggest a board game for four players who like strategy?",
        "Which stretches help after a long run in the cold?",
    ])
    cfg = GenerateConfig(batch_size=2, max_rounds=2, seed=1)
    report = generate_everyday(generator, cfg, topics=["cooking", "games"], per_topic=2)
    texts = [p.text for p in report.prompts]
    assert len(texts) == len(set(texts)) == 4
    assert SEED_MESSAGES[0] not in texts
    assert all(p.label == 0 and p.kind == "everyday" for p in report.prompts)
    assert report.per_topic == {"cooking": 2, "games": 2}
    assert report.rejected["refusal"] == 1 and report.rejected["duplicate"] >= 2


def test_a_topic_still_short_after_the_last_round_is_accepted_as_it_is():
    generator = ScriptedGenerator(["How do I make a paper plane that flies far?", "uh"])
    cfg = GenerateConfig(batch_size=8, max_rounds=3)
    report = generate_everyday(generator, cfg, topics=["paper crafts"], per_topic=5)
    assert report.per_topic == {"paper crafts": 1}
    assert len(generator.prompts) == 5 + 4 + 4  # three rounds, each asking for what is missing


def test_generation_can_be_cancelled_and_bad_sizes_are_refused():
    generator = ScriptedGenerator(["How do I make a paper plane that flies far?"])
    with pytest.raises(Cancelled):
        generate_everyday(generator, GenerateConfig(), topics=["x"], should_cancel=lambda: True)
    with pytest.raises(ValueError):
        generate_everyday(generator, GenerateConfig(), topics=["x"], per_topic=0)
