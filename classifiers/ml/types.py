"""Plain data types shared by generation, augmentation, training and the guard."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]
Message = dict[str, str]  # {"role": Role, "content": str}

RESTRICTED = "restricted"
PERMITTED = "permitted"


@dataclass(frozen=True)
class CategorySpec:
    """One category of a constitution, as the ML code sees it (no Django)."""

    name: str
    kind: str  # RESTRICTED or PERMITTED
    description: str
    excludes: str = ""  # what the category explicitly does not cover
    example_queries: tuple[str, ...] = ()
    example_responses: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()

    @property
    def label(self) -> int:
        """1 = harmful (the classifiers must block it), 0 = benign."""
        return 1 if self.kind == RESTRICTED else 0


@dataclass(frozen=True)
class ConstitutionSpec:
    name: str
    domain: str  # the domain description shown to the generator
    categories: tuple[CategorySpec, ...]


@dataclass
class Example:
    """One training example.

    `messages` is the prompt side of a conversation (user/system/assistant turns up
    to the point where the assistant answers); `response` is the assistant's answer
    that the output classifier reads token by token ("" when there is none).
    """

    messages: list[Message]
    response: str
    label: int  # 1 harmful, 0 benign; from the category kind
    category: str
    source_id: str  # id of the original query; splits are made by it
    transform: str = "original"  # "+"-joined names of the transforms applied
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def prompt_text(self) -> str:
        """The prompt as one string, the input classifier's view of it."""
        return render_messages(self.messages)


def render_messages(messages: list[Message]) -> str:
    if len(messages) == 1 and messages[0].get("role") == "user":
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


ProgressCallback = Callable[..., None]  # on_progress(stage=..., done=..., total=..., **extra)
ShouldCancel = Callable[[], bool]


class ChatGenerator(Protocol):
    """Anything that turns a batch of conversations into one reply each.

    A generator with a true `continues_replies` attribute treats a trailing
    assistant message as the start of its reply and returns only what follows it;
    others (chat endpoints) are only given conversations that end with the user.
    """

    name: str

    def chat(
        self,
        conversations: list[list[Message]],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[str]: ...


class Cancelled(Exception):
    """Raised by long ML loops when should_cancel() turns true."""


def check_cancelled(should_cancel: ShouldCancel | None, what: str = "") -> None:
    """Raise Cancelled (with `what` as its message, if any) once should_cancel()
    turns true; the one cancellation check every long ML loop calls."""
    if should_cancel is not None and should_cancel():
        raise Cancelled(what) if what else Cancelled()
