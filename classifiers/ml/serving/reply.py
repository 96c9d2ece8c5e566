"""ReplyGuard: score a reply that arrives as text from elsewhere, and say what may leave.

The guarded proxy (an upstream model streams the reply), reply scoring in the API
(a gateway sends a reply, whole or chunk by chunk) and the engine's upstream path
all feed text here. Each `feed` scores every token the text completes in ONE
forward of the output classifier (StreamingScorer, its own KV cache), then hands
back the scored tokens, each carrying the text it releases.

The rule that matters: no text leaves before the prefix that ends with it has been
scored below the threshold. A token's text is released only once that token is
scored; the last token of the text so far is held back (it may still merge with
what follows), and the token whose score crosses the threshold releases nothing.
The Constitutional Classifiers team traced one "jailbreak" to tokens that leaked
after a flag; this is why the proxy never forwards ahead of the scorer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from classifiers.ml.output.scoring import reaches
from classifiers.ml.serving.stream import StreamingScorer
from classifiers.ml.serving.tokens import TokenScore


class ReplyGuard:
    """One reply's incremental scoring and release. Not thread-safe: one owner."""

    def __init__(
        self,
        scorer: StreamingScorer,  # started on the conversation's prompt
        *,
        threshold: float,
        enforce: bool,  # halt at the first crossing (False: score and report only)
        rescore: Callable[[TokenScore], None] | None = None,  # a cascade's step
        on_rollback: Callable[[int], None] | None = None,  # re-tokenised tokens dropped
    ) -> None:
        self.scorer = scorer
        self.threshold = threshold
        self.enforce = enforce
        self.rescore = rescore
        self.on_rollback = on_rollback
        self.tokens: list[TokenScore] = []  # every token scored, in scoring order
        self.released = 0  # characters of the text released so far
        self.halted_at: int | None = None  # index of the first token at or over
        self.max_score: float | None = None
        self.finished = False

    @property
    def text(self) -> str:
        """All the reply text received so far (released or not)."""
        return self.scorer.text

    @property
    def stopped(self) -> bool:
        """Halted (enforce): nothing more is scored or released."""
        return self.enforce and self.halted_at is not None

    def feed(self, text: str, *, final: bool = False) -> list[TokenScore]:
        """Score the tokens `text` completes; returns them, each with `.text` set to
        what it releases ("" for a token whose text already left, and for the one
        that crossed the threshold)."""
        if self.stopped or self.finished:
            return []
        self.finished = final
        before = len(self.scorer.token_ids)
        scored = self.scorer.push_text(text, final=final)
        replaced = before - (len(self.scorer.token_ids) - len(scored))
        if replaced > 0 and self.on_rollback is not None:
            self.on_rollback(replaced)
        ends = self.scorer.ends[len(self.scorer.ends) - len(scored) :]
        out: list[TokenScore] = []
        for token, end in zip(scored, ends, strict=True):
            token.index = len(self.tokens)
            if self.rescore is not None:
                self.rescore(token)
            crossed = reaches(token.score, self.threshold)
            self.max_score = max(self.max_score or 0.0, token.score)
            if crossed and self.halted_at is None:
                self.halted_at = token.index
            token.halted = self.enforce and crossed
            if not token.halted and end > self.released:
                token.text = self.scorer.text[self.released : end]
                self.released = end
            else:
                token.text = ""
            self.tokens.append(token)
            out.append(token)
            if token.halted:
                break
        if final and not self.stopped and self.released < len(self.scorer.text) and out:
            # Text no token covers (trailing spaces under WordPiece) rides on the
            # last token once everything before it is scored.
            out[-1].text += self.scorer.text[self.released :]
            self.released = len(self.scorer.text)
        return out

    def finish(self) -> list[TokenScore]:
        """The reply ended: score the held-back token, release what is left."""
        tokens = self.feed("", final=True)
        if not self.stopped and self.released < len(self.scorer.text):
            # Nothing left to score (e.g. only whitespace followed): release it.
            rest = TokenScore(len(self.tokens), -1, self.max_score or 0.0,
                              self.max_score or 0.0, self.scorer.text[self.released :])  # fmt: skip
            self.released = len(self.scorer.text)
            tokens.append(rest)
        return tokens

    def summary(self) -> dict[str, Any]:
        return {
            "max_score": self.max_score,
            "halt_index": self.halted_at,
            "tokens": len(self.tokens),
        }
