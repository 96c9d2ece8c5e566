"""Known jailbreak frames: recognise the augmenter's wrappers and take them off.

The augmenter wraps benign and harmful queries alike in role-play, "DAN", system
override and many-shot frames (`redteam.py`). A mean-pooled sentence encoder reads
such a prompt mostly as its frame, so a benign question inside one scored like a
harmful one: on cbrn-demo the highest benign test scores (0.955-0.976, the ones
that set the 1% false-positive point) were all benign questions in these frames.

A frame the product itself knows carries no content of its own (the templates are
fixed text around one request), so like a known encoding it is undone before
scoring: `canonical.prompt_views` scores the request taken out of the frame and not
the framed surface. Frames it does not know (generated red-team templates, new
ones from the wild) keep the generic treatment: the framed text is scored as well
as the request after its last colon, and the higher score counts. Measured on
cbrn-demo (docs/BENCHMARKS.md, session 9; `bench label_audit --frames-ablation`):
at the deployment threshold it catches more at no more false positives, because
framed benign questions no longer set the threshold; at the split's own 1% point
it is no better, since a classifier trained on framed examples also gave framed
harmful ones weight from the frame.
"""

from __future__ import annotations

import re
from functools import cache

from classifiers.ml import redteam

_PERSONA = "{persona}"
_PERSONA_CAP = "{persona_cap}"
_MANY_SHOT_HEADER = "Here are some example conversations with a helpful assistant:"


def _template_pattern(template: str) -> re.Pattern[str]:
    """A template as a regex: its text literal up to whitespace and case, the
    request a group, a persona one of the augmenter's own. Nothing else may vary:
    text an attacker adds to a frame is content, and the frame is then unknown."""
    pieces = re.split(r"(\{request\}|\{persona\}|\{persona_cap\})", template.strip())
    personas = "|".join(re.escape(p) for p in redteam.PERSONAS)
    parts: list[str] = []
    for piece in pieces:
        if piece == redteam.PLACEHOLDER:
            parts.append(r"(?P<request>.+)")
        elif piece in (_PERSONA, _PERSONA_CAP):
            parts.append(f"(?:{personas})")
        else:
            words = piece.split()
            literal = r"\s+".join(re.escape(word) for word in words)
            # Whitespace at the piece's edges (around a placeholder) may vary.
            lead = r"\s*" if piece[:1].isspace() else ""
            trail = r"\s*" if piece[-1:].isspace() else ""
            parts.append(lead + literal + trail if words else r"\s*")
    return re.compile(r"\s*" + "".join(parts) + r"\s*", re.IGNORECASE | re.DOTALL)


@cache
def _patterns() -> tuple[re.Pattern[str], ...]:
    templates = (
        *redteam.ROLEPLAY_FRAMES,
        *redteam.DAN_FRAMES,
        *redteam.SEED_JAILBREAK_TEMPLATES,
    )
    return tuple(_template_pattern(t) for t in templates)


def _squash(text: str) -> str:
    return " ".join(text.split()).casefold()


_SYSTEM_CLAIMS = frozenset(_squash(claim) for claim in redteam.SYSTEM_CLAIMS)
_ROLE_LINE = re.compile(r"\n(?:system|user|assistant): ")
_MANY_SHOT_TURN = re.compile(r"^User: (?P<question>.*)\nAssistant: (?P<answer>.*)$")
_INNOCUOUS = frozenset((_squash(q), _squash(a)) for q, a in redteam.INNOCUOUS_SHOTS)


def _strip_many_shot(text: str) -> str | None:
    """The final question of the augmenter's many-shot frame (its example turns
    all innocuous shots it knows), else None."""
    blocks = text.strip().split("\n\n")
    if len(blocks) < 3 or blocks[0].strip() != _MANY_SHOT_HEADER:
        return None
    for block in blocks[1:-1]:
        turn = _MANY_SHOT_TURN.match(block.strip())
        if (
            turn is None
            or (
                _squash(turn["question"]),
                _squash(turn["answer"]),
            )
            not in _INNOCUOUS
        ):
            return None
    last = blocks[-1].strip()
    if not (last.startswith("User: ") and last.endswith("\nAssistant:")):
        return None
    return last[len("User: ") : -len("\nAssistant:")].strip() or None


def _strip_system_claim(text: str) -> str | None:
    """The conversation without a known "developer mode" system message, else None.

    Conversations reach the classifier rendered as "role: content" lines
    (types.render_messages); a lone user turn renders as its bare content.
    """
    first, newline, rest = text.strip().partition("\n")
    role, colon, content = first.partition(": ")
    if not (newline and colon and role == "system"):
        return None
    if _squash(content) not in _SYSTEM_CLAIMS:
        return None
    rest = rest.strip()
    if rest.startswith("user: ") and _ROLE_LINE.search(rest) is None:
        return rest[len("user: ") :].strip() or None  # one user turn, maybe multi-line
    return rest or None


def _strip_once(text: str) -> str | None:
    for strip in (_strip_system_claim, _strip_many_shot):
        request = strip(text)
        if request is not None:
            return request
    for pattern in _patterns():
        match = pattern.fullmatch(text)
        if match is not None:
            return match["request"].strip() or None
    return None


def strip_known_frame(text: str, *, max_depth: int = 4) -> str | None:
    """The request inside the augmenter's own jailbreak frames (nested ones too),
    else None."""
    request = None
    for _ in range(max_depth):
        inner = _strip_once(text if request is None else request)
        if inner is None:
            break
        request = inner
    return request
