"""Canonical views of a prompt: undo cheap obfuscations before the input classifier.

Attackers hide a request behind encodings (base64, ROT13, Caesar shifts, reversed
text) and obfuscations (homoglyphs, zero-width characters, leetspeak, spaced-out
letters). The input classifier scores every view returned by `canonical_views` and
takes the maximum, so a request it would block in plain text is blocked encoded too.

Design constraints:
- Pure Python, no model: this runs on every request, so the plain-English path is a
  handful of regex scans (tens of microseconds) and the decoders only run on lines
  that do not already read as English.
- Views are extra evidence: the original text is always the first view and is
  scored too, except where a view decodes it (base64, a letter shift, a reversal).
  An encoded surface means nothing to a sentence encoder, so it is left out of the
  max; the decoders only fire on lines that do not read as English, and decoded
  views keep the lines that did.

The folds live in text/confusables.py and the decoders in text/decoders.py (their
tables are shared with the augmenter, data/rewrites.py, so every obfuscation it
produces is folded back); known jailbreak frames come off via text/frames.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from classifiers.ml.text.confusables import (
    ANY_WORD,
    deobfuscate,
    fold_confusables,
    remove_zero_width,
)
from classifiers.ml.text.decoders import (
    clean_decoded,
    decode_base64_segments,
    decode_lines,
    only_instructions,
    strip_instructions,
)
from classifiers.ml.text.frames import strip_known_frame

# Where a framed request starts: after the last colon or line break.
_FRAME_BREAK = re.compile(r":\s+|\n\s*")


def framed_request(
    text: str, *, min_frame_words: int = 8, min_request_words: int = 3
) -> str | None:
    """The request at the end of a "<long framing>: <request>" prompt, else None.

    Most jailbreak wrappers have that shape (a persona or "you have no rules"
    preamble, then the request after a colon or on its own last line). A
    mean-pooled sentence embedding of the whole prompt dilutes a short request in
    a long frame; scored alone, the request scores as it would unwrapped.
    """
    breaks = list(_FRAME_BREAK.finditer(text.strip()))
    if not breaks:
        return None
    last = breaks[-1]
    frame, request = text.strip()[: last.start()], text.strip()[last.end() :].strip()
    if len(ANY_WORD.findall(frame)) < min_frame_words:
        return None
    if len(ANY_WORD.findall(request)) < min_request_words or only_instructions(request):
        return None
    return request


@dataclass(frozen=True)
class PromptViews:
    """A prompt's canonical views, and which of them are worth scoring."""

    texts: tuple[str, ...]  # the original first, then distinct views
    # Views that decode into another view (base64, a letter shift, a reversal):
    # their surface form is an encoding, which means nothing to a sentence encoder
    # and scores as noise (benign base64 scored 0.93-0.97 on cbrn-demo, above the
    # 1% FPR threshold). What they decode to is scored instead.
    encoded: frozenset[int] = frozenset()
    # Views that are one of the augmenter's known jailbreak frames around another
    # view (frames.strip_known_frame). The frame is fixed text with no content of
    # its own, and scoring it scored the frame: benign questions in such frames
    # set cbrn-demo's deployment threshold. The request taken out of the frame is
    # scored instead of the framed surface.
    framed: frozenset[int] = frozenset()

    @property
    def scored(self) -> list[int]:
        """Indexes of the views to score (all of them if none is plain)."""
        skipped = self.encoded | self.framed
        plain = [i for i in range(len(self.texts)) if i not in skipped]
        return plain or list(range(len(self.texts)))


def prompt_views(
    text: str, *, max_views: int = 8, known_frames: bool = True
) -> PromptViews:
    """The original text, then distinct de-obfuscated / decoded views of it.

    Plain text gives just itself. Decoded views have the encoder's instruction line
    stripped, so a base64-encoded request yields the request itself as a view; a
    request inside a long jailbreak frame yields the request alone as a view, and
    its decodings too when the request alone was encoded. With known_frames, a view
    that is one of the augmenter's own frames is replaced by its request (see
    PromptViews.framed); known_frames=False scores the framed text too (the max
    over it and its request), the rule before session 9, which `bench label_audit
    --frames-ablation` compares.
    """
    views: list[str] = [text]
    encoded: set[int] = set()
    framed: dict[int, str] = {}  # framed view's index -> the request inside it

    def add(view: str | None) -> None:
        if view is not None and view.strip() and view not in views:
            views.append(view)

    def decode(source: str) -> None:
        surfaces = _add_decodings(source, add)
        encoded.update(views.index(v) for v in surfaces if v in views)

    decode(text)
    # Jailbreak frames, on the original, its foldings and every decoding; last, so
    # decodings win the view budget. A view that still folds (leetspeak, homoglyphs)
    # is framed through its folded form only: a raw leetspeak request alone reads
    # unlike any training text and scored 0.98 for a benign physics question.
    for view in list(views):
        known = _known_request(view) if known_frames else None
        folds = _fold(view) != view
        if known is not None:
            # A view that still folds is framed through its folded form (a view
            # of its own, visited in this loop): its raw request is not added.
            if not folds:
                framed[views.index(view)] = known
                # Decoded even when an earlier decoding already added it as a view:
                # that one was not decoded further (rot13 in base64 in a frame).
                add(known)
                decode(known)
                continue
            inner = _known_request(_fold(view))
            if inner is not None:
                framed[views.index(view)] = inner
            continue
        if folds:
            continue
        request = framed_request(view)
        if request is None or request in views:
            continue
        add(request)
        decode(request)
    kept = views[:max_views]
    # A frame counts as taken off only when its request made the view budget.
    unframed = {i for i, request in framed.items() if request in kept}
    return PromptViews(
        tuple(kept),
        frozenset(i for i in encoded if i < len(kept)),
        frozenset(i for i in unframed if i < len(kept)),
    )


def _known_request(view: str) -> str | None:
    """The request inside a known frame, an encoder's instruction line dropped
    (as every decoded view has it dropped), else None."""
    request = strip_known_frame(view)
    return None if request is None else strip_instructions(request)


def canonical_views(text: str, *, max_views: int = 8) -> list[str]:
    """The original text, then distinct de-obfuscated / decoded views of it."""
    return list(prompt_views(text, max_views=max_views).texts)


def _fold(text: str) -> str:
    return deobfuscate(fold_confusables(remove_zero_width(text)))


def _add_decodings(text: str, add: Callable[[str | None], None]) -> list[str]:
    """Add the folded and decoded views of `text`. Returns the encoded surfaces:
    `text` or those of its foldings that something decoded from."""
    # Lossless-ish folding: invisible characters and lookalike letters.
    visible = remove_zero_width(text)
    light = fold_confusables(visible) if not text.isascii() else text
    deobfuscated = deobfuscate(light)
    # Each base the decoders read, and the views that stand for it.
    surfaces: dict[str, list[str]] = {visible: [text]}
    if light != text:
        add(strip_instructions(light))
        surfaces.setdefault(light, []).append(strip_instructions(light))
    if deobfuscated != light:
        add(strip_instructions(deobfuscated))
        surfaces.setdefault(deobfuscated, []).append(strip_instructions(deobfuscated))
    encoded: list[str] = []

    # base64 first on the case-preserving text: folding would corrupt the payload.
    # Every folding still carries the blob, so all of them are encoded surfaces.
    decoded64 = decode_base64_segments(light)
    if decoded64 is not None:
        encoded += [view for views in surfaces.values() for view in views]
        add(clean_decoded(decoded64))

    # Shifts and reversal on the unfolded and folded texts: an obfuscation applied
    # before the cipher must be undone after decoding (the cipher leaves homoglyphs
    # alone), one applied after it must be undone before. Only the base a decoding
    # came from is an encoded surface: raw leetspeak can "decode" as a Caesar shift
    # into gibberish while its folded form, the plain request, must stay scored.
    for base in dict.fromkeys((visible, light, deobfuscated)):
        shifted, reversed_view = decode_lines(strip_instructions(base))
        for decoded in (shifted, reversed_view):
            if decoded is not None:
                encoded += surfaces[base]
                add(clean_decoded(decoded))
    return encoded
