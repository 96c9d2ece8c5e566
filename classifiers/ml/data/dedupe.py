"""Exact and near-duplicate removal for generated queries (MinHash + LSH banding).

Small generators repeat themselves a lot; duplicates inflate a category without
adding signal and, worse, let the same query leak across train/test. Texts are
normalised, cut into character shingles, MinHashed with fixed-seed universal hashes
(never Python's per-process randomised hash()), and bucketed by LSH bands so each
new text is compared only with plausible neighbours.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

_PUNCT_OR_SYMBOL = re.compile(r"[^\w\s]|_", flags=re.UNICODE)
_WHITESPACE = re.compile(r"\s+")

# A prime just above 2**32: hashes of 32-bit shingle ids stay exact in uint64
# because a < 2**31 keeps a * x + b below 2**63.
_PRIME = np.uint64(4294967311)
_HASH_SEED = 0x5EED  # fixed: the same text gets the same signature in every process


def normalise(text: str) -> str:
    """Casefold, NFKC, drop punctuation, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _PUNCT_OR_SYMBOL.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


def shingles(normalised: str, size: int) -> set[int]:
    """Character `size`-grams as stable 32-bit ids (crc32, not hash())."""
    if len(normalised) <= size:
        grams = {normalised}
    else:
        grams = {normalised[i : i + size] for i in range(len(normalised) - size + 1)}
    return {zlib.crc32(g.encode("utf-8")) for g in grams}


def choose_bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows) with bands * rows == num_perm and the LSH S-curve's midpoint
    (1/bands)**(1/rows) just below `threshold`, so candidates are rarely missed; the
    exact signature comparison afterwards removes the false positives."""
    best: tuple[float, int, int] | None = None
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        midpoint = (1.0 / bands) ** (1.0 / rows)
        # Prefer midpoints below the threshold (recall), then the closest one.
        penalty = (threshold - midpoint) if midpoint <= threshold else 10 + midpoint
        if best is None or penalty < best[0]:
            best = (penalty, bands, rows)
    assert best is not None
    return best[1], best[2]


@dataclass
class MinHashConfig:
    num_perm: int = 64  # signature length; more = finer Jaccard estimate, slower
    threshold: float = 0.8  # estimated Jaccard at or above this = near-duplicate
    shingle: int = 5  # character n-gram size of the shingles


class MinHashDeduper:
    """Incremental near-duplicate filter: `add_if_new(text)` keeps first occurrences."""

    def __init__(
        self, num_perm: int = 64, threshold: float = 0.8, shingle: int = 5
    ) -> None:
        self.config = MinHashConfig(
            num_perm=num_perm, threshold=threshold, shingle=shingle
        )
        rng = np.random.default_rng(_HASH_SEED)
        self._a = rng.integers(1, 2**31, size=num_perm, dtype=np.uint64)  # (P,)
        self._b = rng.integers(0, 2**31, size=num_perm, dtype=np.uint64)  # (P,)
        self.bands, self.rows = choose_bands(num_perm, threshold)
        self._exact: dict[str, int] = {}  # normalised text -> index of its signature
        self._signatures: list[np.ndarray] = []
        self._buckets: list[dict[bytes, list[int]]] = [
            defaultdict(list) for _ in range(self.bands)
        ]

    def __len__(self) -> int:
        return len(self._exact)

    def signature(self, normalised: str) -> np.ndarray:
        ids = np.fromiter(shingles(normalised, self.config.shingle), dtype=np.uint64)
        # (S, 1) * (1, P) -> (S, P): every permutation applied to every shingle.
        hashed = (ids[:, None] * self._a[None, :] + self._b[None, :]) % _PRIME
        return hashed.min(axis=0)  # (P,)

    def _band_keys(self, signature: np.ndarray) -> list[bytes]:
        return [
            signature[i * self.rows : (i + 1) * self.rows].tobytes()
            for i in range(self.bands)
        ]

    def is_duplicate(self, text: str) -> bool:
        """True when `text` matches something already added (does not add it)."""
        return self.match(text) is not None

    def match(self, text: str) -> int | None:
        """The index, in order of adding, of an added text that `text` repeats or
        nearly repeats; None when it is new (does not add it)."""
        norm = normalise(text)
        if norm in self._exact:
            return self._exact[norm]
        signature = self.signature(norm)
        return self._near_match(signature, self._band_keys(signature))

    def _near_match(self, signature: np.ndarray, keys: list[bytes]) -> int | None:
        seen: set[int] = set()
        for band, key in enumerate(keys):
            for idx in self._buckets[band].get(key, ()):
                if idx in seen:
                    continue
                seen.add(idx)
                similarity = float(np.mean(self._signatures[idx] == signature))
                if similarity >= self.config.threshold:
                    return idx
        return None

    def add_if_new(self, text: str) -> bool:
        """Add `text` and return True unless it (nearly) duplicates an earlier one."""
        norm = normalise(text)
        if norm in self._exact:
            return False
        signature = self.signature(norm)
        keys = self._band_keys(signature)
        if self._near_match(signature, keys) is not None:
            return False
        index = len(self._signatures)
        self._signatures.append(signature)
        self._exact[norm] = index
        for band, key in enumerate(keys):
            self._buckets[band][key].append(index)
        return True


def dedupe(
    texts: Iterable[str],
    *,
    threshold: float = 0.8,
    num_perm: int = 64,
    shingle: int = 5,
) -> list[int]:
    """Indices of the texts to keep: first occurrences, no exact/near duplicates."""
    deduper = MinHashDeduper(num_perm=num_perm, threshold=threshold, shingle=shingle)
    kept = [i for i, text in enumerate(texts) if deduper.add_if_new(text)]
    logger.debug("dedupe kept %d texts", len(kept))
    return kept


def jaccard(a: str, b: str, shingle: int = 5) -> float:
    """Exact shingle Jaccard similarity of two texts (for tests and diagnostics)."""
    sa, sb = shingles(normalise(a), shingle), shingles(normalise(b), shingle)
    return len(sa & sb) / max(1, len(sa | sb))
