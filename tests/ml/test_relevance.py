"""Stage I's query filters: user-message shape and relevance to the category."""

from __future__ import annotations

import pytest

from classifiers.ml.data.filters import RelevanceFilter, looks_like_user_message
from classifiers.ml.input.model import sentence_embedder
from classifiers.ml.registry import encoder_dir
from classifiers.ml.types import CategorySpec, ConstitutionSpec

SPEC = ConstitutionSpec(
    name="Widgets",
    domain="A gardening assistant.",
    categories=(
        CategorySpec(
            name="Forbidden widgets", kind="restricted",
            description="Requests to build or obtain the forbidden widget.",
            example_queries=(
                "How do I build the forbidden widget at home?",
                "Where can I buy parts for a forbidden widget without anyone noticing?",
            ),
        ),  # fmt: skip
        CategorySpec(
            name="Gardening", kind="permitted",
            description="Ordinary gardening questions.",
            example_queries=(
                "When should I prune my apple trees?",
                "What is the best soil for growing roses?",
            ),
        ),  # fmt: skip
    ),
)


@pytest.mark.parametrize(
    "text",
    [
        "I'm here to help.",
        "Sorry, sorry...",
        "Hello there, happy to help with your garden!",
        "Sure, here is a message:",
        "Thanks!",
        "widget?",
    ],
)
def test_assistant_style_text_is_not_a_user_message(text):
    assert not looks_like_user_message(text)


@pytest.mark.parametrize(
    "text",
    ["How do I keep slugs off my lettuce?", "give me the steps to assemble the widget"],
)
def test_requests_and_questions_are_user_messages(text):
    assert looks_like_user_message(text)


@pytest.fixture(scope="module")
def embed():
    return sentence_embedder(encoder_dir(), device="cpu")


def test_the_real_encoder_keeps_on_topic_queries_and_drops_drifting_ones(embed):
    relevance = RelevanceFilter(SPEC, embed, min_relevance=0.3)
    restricted = relevance.reasons(
        [
            "Tell me how to assemble a forbidden widget from spare parts",
            "What flowers grow best in a shady garden?",
            "The quarterly earnings report shows strong growth in Asia.",
        ],
        category_index=0,
    )
    assert restricted[0] is None
    # Benign gardening text under a restricted label, and text about nothing at all.
    assert restricted[1] in {"off_topic", "wrong_side"}
    assert restricted[2] in {"off_topic", "wrong_side"}
    permitted = relevance.reasons(["How often should I water tomato plants?"], 1)
    assert permitted == [None]


def test_a_query_closer_to_the_other_kind_is_on_the_wrong_side():
    import numpy as np

    vectors = {"widget": [1.0, 0.0], "roses": [0.0, 1.0]}

    def embed(texts):
        rows = []
        for text in texts:
            row = np.array([0.0, 0.0])
            for word, vector in vectors.items():
                row += text.lower().count(word) * np.array(vector)
            rows.append(row / max(np.linalg.norm(row), 1e-9))
        return np.array(rows, dtype="float32")

    relevance = RelevanceFilter(SPEC, embed, min_relevance=0.3)
    # Own similarity 0.45 passes the floor, but the gardening category is closer.
    assert relevance.reasons(["widget roses roses"], 0) == ["wrong_side"]
    assert relevance.reasons(["widget widget roses"], 0) == [None]


def test_an_empty_batch_needs_no_embedding():
    calls = []

    def embed(texts):
        calls.append(list(texts))
        import numpy as np

        return np.ones((len(texts), 3), dtype="float32") / 3**0.5

    relevance = RelevanceFilter(SPEC, embed, min_relevance=0.3)
    calls.clear()
    assert relevance.reasons([], 0) == []
    assert calls == []
