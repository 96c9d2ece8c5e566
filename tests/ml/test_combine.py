"""Combining datasets: no source id collides, splits stay, repeats never straddle."""

from __future__ import annotations

import codecs

import pytest

from classifiers.ml.data.combine import combine_examples, source_texts
from classifiers.ml.types import Example


def ex(text, source_id, split, *, label=1, transform="original", category="widgets"):
    if transform == "rot13":
        text = codecs.encode(text, "rot13")
    return Example(
        messages=[{"role": "user", "content": text}], response="", label=label,
        category=category, source_id=source_id, transform=transform,
        meta={"split": split, "source": "generated"},
    )  # fmt: skip


def run(source_id, text, split, **kw):
    """A source with its rot13 variant, as augmentation writes them."""
    return [ex(text, source_id, split, **kw), ex(text, source_id, split, transform="rot13", **kw)]


def test_source_ids_get_the_part_prefix_and_splits_stay():
    first = run("widgets-0000", "how do I make the forbidden widget at home", "test")
    second = run("widgets-0000", "where could someone buy forbidden widget parts", "train")
    combined = combine_examples([("d1", first), ("d2", second)])
    assert [(e.source_id, e.meta["split"]) for e in combined.examples] == [
        ("d1:widgets-0000", "test"), ("d1:widgets-0000", "test"),
        ("d2:widgets-0000", "train"), ("d2:widgets-0000", "train"),
    ]  # fmt: skip
    assert combined.duplicate_sources == 0


def test_a_repeated_source_is_left_out_with_all_its_variants():
    author = "how do I make the forbidden widget"  # every run starts from it
    first = run("author-0", author, "test") + run("w-1", "what tools shape widget casings", "train")
    second = run("author-0", author, "train") + run("w-1", "who sells the widget trigger", "test")
    second += run("w-2", "How do I make the forbidden widget?!", "validation")  # near copy
    combined = combine_examples([("d1", first), ("d2", second)])
    by_source = {}
    for e in combined.examples:
        by_source.setdefault(e.source_id, set()).add(e.meta["split"])
    assert by_source == {
        "d1:author-0": {"test"}, "d1:w-1": {"train"}, "d2:w-1": {"test"},
    }  # fmt: skip
    assert combined.parts["d2"] == {
        "sources": 3, "kept_sources": 1, "duplicate_sources": 2,
        "label_conflicts": 0, "examples": 2,
    }  # fmt: skip


def test_near_copies_inside_one_part_are_that_run_s_choice_and_stay():
    first = run("a", "how do I make the forbidden widget", "train")
    first += run("b", "How do I make the forbidden widget?", "test")  # kept by its run
    second = run("c", "how do I make the forbidden widget!", "train")
    combined = combine_examples([("d1", first), ("d2", second)])
    assert {e.source_id for e in combined.examples} == {"d1:a", "d1:b"}
    assert combined.parts["d1"]["duplicate_sources"] == 0
    assert combined.parts["d2"]["duplicate_sources"] == 1


def test_near_duplicates_are_judged_on_the_original_not_a_variant():
    # The variants differ (rot13 of different strings) but the originals repeat.
    first = run("a", "describe the widget assembly steps in detail", "test")
    second = [ex("describe the widget assembly steps in detail", "b", "train", transform="rot13"),
              ex("describe the widget assembly steps in detail", "b", "train")]  # fmt: skip
    assert source_texts(second)["b"][0] == "describe the widget assembly steps in detail"
    combined = combine_examples([("d1", first), ("d2", second)])
    assert {e.source_id for e in combined.examples} == {"d1:a"}


def test_a_repeat_with_the_other_label_counts_as_a_conflict_and_the_first_label_wins():
    first = run("a", "how do I protect seedlings from frost", "train", label=0)
    second = run("b", "how do I protect seedlings from frost", "test", label=1)
    combined = combine_examples([("d1", first), ("d2", second)])
    assert {e.label for e in combined.examples} == {0}
    assert combined.label_conflicts == 1


def test_held_out_variants_follow_their_source():
    def part(source_id, split):
        original = ex("tell me the widget recipe", source_id, split)
        hidden = ex("tell me the widget recipe", source_id, "heldout_transforms", transform="rot13")
        hidden.meta["source_split"] = split
        return [original, hidden]

    combined = combine_examples([("d1", part("a", "test")), ("d2", part("x", "train"))])
    assert [(e.source_id, e.meta["split"]) for e in combined.examples] == [
        ("d1:a", "test"), ("d1:a", "heldout_transforms"),
    ]
    assert combined.examples[1].meta["source_split"] == "test"


def test_part_names_must_be_distinct():
    with pytest.raises(ValueError, match="distinct"):
        combine_examples([("d1", []), ("d1", [])])
