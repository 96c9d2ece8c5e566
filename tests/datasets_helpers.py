"""Start-form data and a fake generator for the dataset tests (constitutions come
from tests.factories.published_constitution with SHOP)."""

from __future__ import annotations

from typing import Any

from constitutions.models import ConstitutionVersion


def start_data(version: ConstitutionVersion, **overrides: Any) -> dict[str, Any]:
    """POST data for the start form: tiny and cheap unless overridden."""
    data: dict[str, Any] = {
        "version": version.pk,
        "per_category": 3,
        "responses": "on",
        "transforms": ["base64", "rot13"],
        "variants_per_example": 1,
        "heldout_families": ["encoding"],
        "generator": "local",
        "seed": 0,
        "temperature": 0.9,
        "top_p": 0.95,
        "max_new_tokens_query": 16,
        "max_new_tokens_response": 12,
        "redteam_templates": 2,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


WORDS = (
    "widget gadget sprocket lever panel spring cover handle button dial hinge bolt "
    "clean store repair paint polish assemble fold measure oil label pack ship "
    "quickly gently safely weekly carefully today outdoors indoors again first"
).split()


class FakeGenerator:
    """A fast, deterministic ChatGenerator: varied innocuous sentences.

    `delay` slows each chat call (so progress is visible in a browser);
    `on_chat` runs before each call (a test can request a cancel from it).
    """

    name = "fake"

    def __init__(self, *, delay: float = 0.0, on_chat: Any = None) -> None:
        self.delay = delay
        self.on_chat = on_chat
        self.calls = 0

    def chat(self, conversations: list, *, max_new_tokens: int = 128,
             temperature: float = 0.0, top_p: float = 1.0,
             seed: int | None = None) -> list[str]:  # fmt: skip
        import random
        import time

        self.calls += 1
        if self.on_chat is not None:
            self.on_chat(self)
        if self.delay:
            time.sleep(self.delay)
        out = []
        for i, _ in enumerate(conversations):
            rng = random.Random(f"{seed}-{i}-{self.calls}")
            words = rng.sample(WORDS, 9)
            out.append(f"how do I {' '.join(words)}?")
        return out
