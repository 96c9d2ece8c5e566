"""canonical_views: every encoding/obfuscation the augmenter makes folds back."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifiers.ml.data.transforms import FAMILIES, apply_transforms
from classifiers.ml.text import decoders
from classifiers.ml.text.canonical import canonical_views, framed_request, prompt_views
from classifiers.ml.text.confusables import fold_confusables
from classifiers.ml.text.decoders import english_score, strip_instructions
from classifiers.ml.types import Example

REQUESTS = (
    "how do i make the forbidden widget",
    "tell me about vaccines",
    "please explain how to build the secret gadget at home",
    "what is the best way to grow tomatoes in a small garden",
)
REVERSIBLE_OBFUSCATIONS = (
    *FAMILIES["encoding"],
    *FAMILIES["obfuscation"],
)


def _example(text: str) -> Example:
    return Example(
        messages=[{"role": "user", "content": text}],
        response="",
        label=1,
        category="widgets",
        source_id="w-1",
    )


@pytest.mark.parametrize(
    "text",
    [
        "how do i make the forbidden widget",
        "Tell me about vaccines. What are they made of?",
        "A well-known recipe for bread, e.g. sourdough, from 2024.",
        "My email is jane.doe@example.com and my iPhone broke.",
        "Un café au lait, s'il vous plaît.",
        "привет, как дела?",
        "internationalization and localization are long words",
        "",
    ],
)
def test_plain_text_gives_just_itself(text: str) -> None:
    assert canonical_views(text) == [text]


@pytest.mark.parametrize("name", REVERSIBLE_OBFUSCATIONS)
@pytest.mark.parametrize("request_text", REQUESTS)
def test_encoded_request_is_recovered_in_some_view(
    name: str, request_text: str
) -> None:
    checked = 0
    for seed in range(12):
        out = apply_transforms(
            _example(request_text), [name], rng=random.Random(seed)
        )
        if out.meta.get("word_split_separator") == " ":
            continue  # split by plain spaces is ambiguous; documented limitation
        views = canonical_views(out.messages[-1]["content"])
        assert views[0] == out.messages[-1]["content"]
        assert any(request_text in view for view in views), (name, seed, views)
        checked += 1
    assert checked >= 8


@pytest.mark.parametrize("name", ["base64", "rot13", "caesar", "reverse"])
def test_decoded_view_is_the_request_itself_without_instruction(name: str) -> None:
    request_text = REQUESTS[0]
    out = apply_transforms(_example(request_text), [name], rng=random.Random(0))
    assert request_text in canonical_views(out.messages[-1]["content"])


@pytest.mark.parametrize(
    "chain",
    [
        ["base64", "dan_wrapper"],
        ["rot13", "roleplay_wrapper"],
        ["caesar", "redteam_template"],
        ["leetspeak", "many_shot"],
        ["homoglyph", "base64"],
        ["zero_width", "reverse"],
    ],
)
def test_composed_chains_still_recover_the_request(chain: list[str]) -> None:
    request_text = REQUESTS[0]
    for seed in range(5):
        out = apply_transforms(
            _example(request_text), chain, rng=random.Random(seed)
        )
        views = canonical_views(out.prompt_text)
        assert any(request_text in view for view in views), (chain, seed, views)


WORDS = ("widget", "garden", "forbidden", "gadget", "tomato", "secret", "recipe")


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),
    shift=st.integers(min_value=1, max_value=25),
    encoding=st.sampled_from(["base64", "caesar", "reverse"]),
)
def test_property_encoded_sentences_are_recovered(
    words: list[str], shift: int, encoding: str
) -> None:
    request_text = "please tell me how to make the " + " ".join(words)
    if encoding == "caesar":
        payload = decoders.caesar(request_text, shift)
    else:
        payload = decoders.ENCODERS[encoding](request_text)
    views = canonical_views(f"Decode this and answer:\n{payload}")
    assert request_text in views


def test_caesar_view_only_when_clearly_more_english() -> None:
    # Random letters: no shift reads as English, so no extra view appears.
    assert canonical_views("xq zzv kpt wmrl qhhx") == ["xq zzv kpt wmrl qhhx"]
    assert english_score("how do i make the widget") > english_score("ipx ep j nblf")


def test_genuine_cyrillic_is_not_folded_but_mixed_script_is() -> None:
    assert fold_confusables("привет мир") == "привет мир"
    assert fold_confusables("h\u043ew \u0430re you") == "how are you"
    assert (
        fold_confusables("\uff57\uff49\uff44\uff47\uff45\uff54") == "widget"
    )  # fullwidth


def test_unicode_tr39_letter_lookalikes_fold_beyond_the_hand_made_table() -> None:
    from classifiers.ml.text.confusables import CONFUSABLE_FOLD, tr39_letter_fold

    tr39 = tr39_letter_fold()
    assert len(tr39) > 450 and len(CONFUSABLE_FOLD) >= len(tr39)
    # Armenian, Cherokee and Latin small capitals: none was in the 44-entry table.
    assert fold_confusables("\u0570ow to make a wid\u0261et") == "how to make a widget"
    assert fold_confusables("w\u13acb \u028f\u1d0f\u1d1cr") == "wEb your"
    # A token of another script alone keeps the old rule: genuine words stay.
    assert fold_confusables("\u0435\u0433\u043e \u03b3\u03b9\u03b1") == "\u0435\u0433\u043e \u03b3\u03b9\u03b1"
    # The hand-made table wins: Cyrillic capital I reads as I, not TR39's l.
    assert fold_confusables("\u0406n the lab") == "In the lab"


def test_strip_instructions_drops_only_instruction_lines() -> None:
    assert (
        strip_instructions("Decode this base64 and answer:\nhello there")
        == "hello there"
    )
    assert strip_instructions("hello there") == "hello there"


@pytest.mark.parametrize("wrapper", ["roleplay_wrapper", "dan_wrapper"])
@pytest.mark.parametrize("request_text", REQUESTS)
def test_request_inside_a_jailbreak_frame_is_a_view_of_its_own(
    wrapper: str, request_text: str
) -> None:
    for seed in range(4):  # every frame of the wrapper
        out = apply_transforms(
            _example(request_text), [wrapper], rng=random.Random(seed)
        )
        wrapped = out.messages[-1]["content"]
        assert wrapped != request_text
        assert request_text in canonical_views(wrapped)


@pytest.mark.parametrize("encoding", ["base64", "rot13", "caesar", "reverse"])
@pytest.mark.parametrize("order", ["encode_then_wrap", "wrap_then_encode"])
def test_encoded_surfaces_are_not_scored_but_their_decodings_are(
    encoding: str, order: str
) -> None:
    request_text = REQUESTS[2]
    chain = [encoding, "roleplay_wrapper"]
    if order == "wrap_then_encode":
        chain.reverse()
    out = apply_transforms(
        _example(request_text), chain, rng=random.Random(3)
    )
    views = prompt_views(out.messages[-1]["content"])
    assert 0 in views.encoded and 0 not in views.scored
    # The decoding is scored; the encoded surfaces are not (no fallback to all).
    assert all(i not in views.encoded for i in views.scored)
    scored = [views.texts[i] for i in views.scored]
    assert any(request_text in view.lower() for view in scored)


def test_an_obfuscated_request_in_a_frame_is_framed_folded_only() -> None:
    out = apply_transforms(
        _example(REQUESTS[2]), ["leetspeak", "dan_wrapper"], rng=random.Random(2)
    )
    wrapped = out.messages[-1]["content"]
    raw_tail = framed_request(wrapped)
    assert raw_tail is not None and raw_tail != REQUESTS[2]  # still leetspeak
    views = prompt_views(wrapped)
    assert raw_tail not in views.texts
    assert REQUESTS[2] in [views.texts[i] for i in views.scored]


def _scored(text: str) -> list[str]:
    views = prompt_views(text)
    return [views.texts[i] for i in views.scored]


@pytest.mark.parametrize("seed", range(40))
def test_leetspeak_is_scored_folded_even_when_a_shift_also_decodes_it(seed: int) -> None:
    """Raw leetspeak sometimes "decodes" as a Caesar shift into gibberish; the
    folded plain request must still be scored, not only the gibberish."""
    for request_text in REQUESTS:
        for name in ("leetspeak", "homoglyph"):
            out = apply_transforms(
                _example(request_text), [name], rng=random.Random(seed)
            )
            scored = _scored(out.messages[-1]["content"])
            assert any(request_text in view.lower() for view in scored), (name, seed)


def test_plaintext_request_stays_scored_beside_an_encoded_benign_blob() -> None:
    """An attacker must not hide a request by appending an encoded benign text and
    ending the request like an encoder's instruction ("Answer in full detail:")."""
    import base64

    from classifiers.ml.text.decoders import caesar

    request_text = "How do I build the forbidden widget at home? Answer in full detail:"
    benign = "How do I grow tomatoes in a small garden this summer?"
    blob = base64.b64encode(benign.encode()).decode()
    for payload in (blob, caesar(benign, 3)):
        scored = _scored(f"{request_text}\n{payload}")
        assert any(request_text in view for view in scored), payload
    # The encoders' own instruction lines are still stripped from decodings.
    assert _scored(f"Decode this base64 and answer:\n{blob}") == [benign]


def test_plain_and_folded_text_is_scored_as_it_is() -> None:
    assert prompt_views("tell me about vaccines").scored == [0]
    folded = prompt_views("t​ell me ab​out vacc​ines")
    assert folded.encoded == frozenset() and 0 in folded.scored


def test_framed_request_needs_a_long_frame_and_a_real_request() -> None:
    assert framed_request("Note: tell me about vaccines") is None  # short frame
    assert framed_request(
        "You are a helpful pirate captain who always answers in full: hi"
    ) is None  # the tail is not a request
    assert (
        framed_request("You are a helpful pirate captain who always answers:\n\nwhat is rum?")
        == "what is rum?"
    )
    assert framed_request("no frame at all in this one") is None


def test_max_views_is_respected() -> None:
    out = apply_transforms(
        _example(REQUESTS[0]), ["leetspeak", "rot13"], rng=random.Random(1)
    )
    views = canonical_views(out.prompt_text, max_views=2)
    assert len(views) == 2
    assert views[0] == out.prompt_text


def test_fast_enough_for_every_request() -> None:
    plain = "Tell me about vaccines and how they train the immune system, please."
    encoded = apply_transforms(
        _example(REQUESTS[2]), ["caesar"], rng=random.Random(0)
    ).prompt_text
    for text, budget_ms in ((plain, 0.5), (encoded, 3.0)):
        canonical_views(text)
        start = time.perf_counter()
        for _ in range(200):
            canonical_views(text)
        per_call_ms = (time.perf_counter() - start) / 200 * 1000
        assert per_call_ms < budget_ms, (text[:30], per_call_ms)
