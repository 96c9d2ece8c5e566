"""factory_boy factories for constitutions (innocuous placeholder text only)."""

from __future__ import annotations

import factory

from constitutions.models import Category, Constitution, Kind


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
