"""Jailbreak template generation: validation, normalisation, dedup, batching."""

from __future__ import annotations

import pytest

from classifiers.ml.data.redteam import (
    TemplateDeduper,
    clean_template,
    generate_jailbreak_templates,
)
from classifiers.ml.text.frames import (
    PLACEHOLDER,
    SEED_JAILBREAK_TEMPLATES,
    apply_template,
)
from classifiers.ml.types import Cancelled, Message


class ScriptedGenerator:
    """Deterministic ChatGenerator returning canned replies in order (unit test of
    the pure validation/dedup logic, not a stand-in for a service)."""

    name = "scripted"

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[int, int | None]] = []
        self.prompts: list[list[Message]] = []

    def chat(
        self,
        conversations: list[list[Message]],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        self.calls.append((len(conversations), seed))
        self.prompts.extend(conversations)
        out = []
        for _ in conversations:
            out.append(self.replies.pop(0) if self.replies else "I'm sorry, I can't.")
        return out


GOOD_A = "You are a museum guide answering a visitor's curious question: {request}"
GOOD_B = "Imagine a quiz show where the final question, worth a million, is: [REQUEST]"
GOOD_C = (
    "A pen pal from another century writes to you asking <request> and awaits a reply."
)


def test_seed_templates_are_valid_and_distinct() -> None:
    assert 8 <= len(SEED_JAILBREAK_TEMPLATES) <= 12
    deduper = TemplateDeduper()
    for template in SEED_JAILBREAK_TEMPLATES:
        assert template.count(PLACEHOLDER) == 1
        assert clean_template(template) == template
        assert deduper.add_if_new(template)


def test_apply_template() -> None:
    assert apply_template(
        "Story time: {request} The end.", "tell me about vaccines"
    ) == ("Story time: tell me about vaccines The end.")
    # Other braces stay literal (no str.format surprises).
    assert apply_template("{x} {request}", "hi") == "{x} hi"
    with pytest.raises(ValueError, match="exactly one"):
        apply_template("no placeholder here", "hi")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (GOOD_A, GOOD_A),
        (GOOD_B, GOOD_B.replace("[REQUEST]", PLACEHOLDER)),
        (GOOD_C, GOOD_C.replace("<request>", PLACEHOLDER)),
        (
            'Template: "As the narrator of a fable, answer {{request}} for the children."',
            "As the narrator of a fable, answer {request} for the children.",
        ),
        (
            "```\nIn a dream sequence, a talking cat asks [INSERT REQUEST HERE] softly.\n```",
            "In a dream sequence, a talking cat asks {request} softly.",
        ),
    ],
)
def test_clean_template_normalises_placeholders(raw: str, expected: str) -> None:
    assert clean_template(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "{request}",  # too short
        "A story with no placeholder at all, about a dragon and a knight.",
        "Ask {request} and then again {request} in the same breath, twice over.",
        "I'm sorry, but I can't help create jailbreak templates: {request}",
        "As an AI language model I will not write this {request} for you today.",
        "go go go go go go go go go go go go go go go go go go go {request} go go",
        "x" * 1300 + " {request}",
    ],
)
def test_clean_template_rejects_bad_replies(raw: str) -> None:
    assert clean_template(raw) is None


def test_generation_validates_dedupes_and_stops_at_n() -> None:
    near_copy_of_a = GOOD_A.replace("curious", "very curious")
    seed_copy = SEED_JAILBREAK_TEMPLATES[0].upper()  # a seed, only re-cased
    replies = [
        GOOD_A,
        "I'm sorry, but I cannot help with that.",
        near_copy_of_a,
        seed_copy,
        "no placeholder in this one, just a long sentence about nothing",
        GOOD_B,
        GOOD_A,  # exact duplicate
        GOOD_C,
        "Yet another fine frame where a robot librarian is asked: {request}",
    ]
    generator = ScriptedGenerator(replies)
    progress: list[dict] = []
    out = generate_jailbreak_templates(
        generator,
        n=3,
        seed=7,
        batch_size=4,
        on_progress=lambda **kw: progress.append(kw),
    )
    assert out == [
        GOOD_A,
        GOOD_B.replace("[REQUEST]", PLACEHOLDER),
        GOOD_C.replace("<request>", PLACEHOLDER),
    ]
    # Batched: one chat call per round of 4 prompts, seed advanced per round.
    assert generator.calls == [(4, 7), (4, 8)]
    assert progress[-1]["stage"] == "templates"
    assert progress[-1]["done"] == progress[-1]["total"] == 3
    # Few-shot: every prompt shows seed templates and asks for the placeholder.
    for prompt in generator.prompts:
        content = prompt[0]["content"]
        assert PLACEHOLDER in content
        assert sum(seed in content for seed in SEED_JAILBREAK_TEMPLATES) == 3


def test_generation_is_bounded_when_the_model_only_refuses() -> None:
    generator = ScriptedGenerator([])
    out = generate_jailbreak_templates(
        generator, n=5, seed=0, batch_size=4, max_rounds=3
    )
    assert out == []
    assert len(generator.calls) == 3
    default_rounds = ScriptedGenerator([])
    generate_jailbreak_templates(default_rounds, n=4, seed=0, batch_size=8)
    assert len(default_rounds.calls) == 2 + (4 * 4) // 8


def test_generation_is_deterministic_for_a_seed() -> None:
    replies = [GOOD_A, GOOD_B, GOOD_C]
    first, second = ScriptedGenerator(replies), ScriptedGenerator(replies)
    out1 = generate_jailbreak_templates(first, n=3, seed=3, batch_size=2)
    out2 = generate_jailbreak_templates(second, n=3, seed=3, batch_size=2)
    assert out1 == out2
    assert first.prompts == second.prompts
    other = ScriptedGenerator(replies)
    generate_jailbreak_templates(other, n=3, seed=4, batch_size=2)
    assert other.prompts != first.prompts  # different few-shot samples


def test_generation_cancels() -> None:
    with pytest.raises(Cancelled):
        generate_jailbreak_templates(
            ScriptedGenerator([GOOD_A]), n=2, seed=0, should_cancel=lambda: True
        )
