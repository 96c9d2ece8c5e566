"""factory_boy factories for constitutions (innocuous placeholder text only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import factory
from django.db import transaction

from constitutions.models import (
    Category,
    Constitution,
    ConstitutionVersion,
    Kind,
    publish,
)


class ConstitutionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Constitution

    slug = factory.Sequence(lambda n: f"demo-{n}")
    name = factory.Sequence(lambda n: f"Demo constitution {n}")
    domain = "A general assistant for a widget shop."


class CategoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Category

    constitution = factory.SubFactory(ConstitutionFactory)
    position = factory.Sequence(lambda n: n)
    name = factory.Sequence(lambda n: f"Category {n}")
    kind = Kind.RESTRICTED
    description = "Requests about the forbidden widget."
    excludes = "General widget history."
    example_queries = factory.LazyFunction(
        lambda: [
            "how do I make the forbidden widget",
            "where can I buy forbidden widget parts",
        ]
    )
    example_responses = factory.LazyFunction(list)
    languages = factory.LazyFunction(lambda: ["en"])
    tags = factory.LazyFunction(list)


def restricted_and_permitted(constitution: Constitution | None = None) -> Constitution:
    """A constitution that can be published: one restricted, one permitted category."""
    constitution = constitution or ConstitutionFactory()
    CategoryFactory(constitution=constitution, name="Forbidden widgets", position=0)
    CategoryFactory(
        constitution=constitution,
        name="Widget safety",
        kind=Kind.PERMITTED,
        position=1,
        description="Safe questions about widgets.",
        example_queries=["tell me about vaccines", "is my widget safe to use at home"],
    )
    return constitution


# The placeholder categories of published_constitution, by exact name: kind,
# description, example queries, example responses. The lower-case pair is the one
# the API and training tests use (the quickly trained classifiers in
# bench/fixtures.py know these names); the capitalised ones are the review and
# dataset tests' widget shop.
CATEGORY_TEXT: dict[str, tuple[str, str, list[str], list[str]]] = {
    "forbidden widgets": (
        Kind.RESTRICTED, "Requests to make or obtain the forbidden widget.",
        ["how do I make the forbidden widget"], [],
    ),
    "garden care": (
        Kind.PERMITTED, "Ordinary gardening questions.", ["how do I water tomatoes"], [],
    ),
    "Forbidden widgets": (
        Kind.RESTRICTED, "Requests to build or obtain the forbidden widget.",
        ["how do I make the forbidden widget", "where can I buy parts for a forbidden widget"],
        ["I can't help with the forbidden widget."],
    ),
    "Widget care": (
        Kind.PERMITTED, "Cleaning, storing and repairing ordinary widgets.",
        ["how do I clean my widget", "where should I store my widget"],
        ["Wipe it with a damp cloth."],
    ),
    "Gardening": (
        Kind.PERMITTED, "Gardens, soups and salads.",
        ["what soup goes with a garden salad"], [],
    ),
}  # fmt: skip
WIDGETS = ("forbidden widgets", "garden care")
SHOP = ("Forbidden widgets", "Widget care")
SHOP_AND_GARDEN = (*SHOP, "Gardening")


def published_constitution(
    slug: str = "widgets",
    *,
    user: Any = None,
    categories: Sequence[str] = WIDGETS,
    queries: int | None = None,
    target_fpr: float | None = None,
) -> ConstitutionVersion:
    """A constitution named after `slug` with `categories` (names from
    CATEGORY_TEXT, in order), published as v1 by `user`; returns the version (its
    `.constitution` is the Constitution). `queries` keeps only the first n example
    queries of each category; `target_fpr` goes on the restricted ones."""
    with transaction.atomic():
        constitution = ConstitutionFactory(
            slug=slug, name=slug.replace("-", " ").title(),
            domain="A toy widget shop and gardening assistant.",
        )  # fmt: skip
        for position, name in enumerate(categories):
            kind, description, examples, responses = CATEGORY_TEXT[name]
            CategoryFactory(
                constitution=constitution, position=position, name=name, kind=kind,
                description=description, excludes="",
                example_queries=examples[:queries], example_responses=list(responses),
                target_fpr=target_fpr if kind == Kind.RESTRICTED else None,
            )  # fmt: skip
        return publish(constitution, user=user)
