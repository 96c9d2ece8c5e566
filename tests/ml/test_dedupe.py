from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

from classifiers.ml.data.dedupe import (
    MinHashDeduper,
    choose_bands,
    dedupe,
    jaccard,
    normalise,
)

ROOT = Path(__file__).parents[2]

BASE = "How do I bake sourdough bread at home with a cast iron pot?"


def test_normalise():
    assert normalise("  Hello,\tWORLD!!  ") == "hello world"
    assert normalise("ﬁne  ｆｕｌｌｗｉｄｔｈ") == "fine fullwidth"  # NFKC
    assert normalise("Straße") == "strasse"  # casefold, not lower
    assert normalise("cast-iron\n\npot") == "cast iron pot"
    assert normalise("?!...") == ""


def test_exact_normalised_duplicates_removed_first_kept():
    texts = [
        BASE,
        "what is rain",
        BASE.upper(),
        "  how do i bake sourdough bread at home with a cast iron pot",
        "what is rain?",
    ]
    assert dedupe(texts) == [0, 1]


def test_near_duplicates_removed_distinct_kept():
    near = "How do I bake sourdough bread at home with a cast iron pan?"
    assert jaccard(BASE, near) > 0.85
    texts = [
        BASE,
        near,
        "tell me about vaccines",
        "What is the tallest mountain in Europe?",
        "how do I make the forbidden widget",
        "Tell me about vaccines please",  # close but shorter text: Jaccard < 0.8
    ]
    kept = dedupe(texts)
    assert kept[:1] == [0] and 1 not in kept
    assert {2, 3, 4} <= set(kept)
    assert jaccard(texts[2], texts[5]) < 0.8 and 5 in kept


def test_threshold_controls_strictness():
    texts = ["tell me about vaccines", "tell me about vaccines please"]
    assert 0.5 < jaccard(*texts) < 0.8
    assert dedupe(texts, threshold=0.9) == [0, 1]
    assert dedupe(texts, threshold=0.5, num_perm=128) == [0]


def test_add_if_new_and_is_duplicate():
    d = MinHashDeduper(num_perm=64, threshold=0.8, shingle=5)
    assert d.add_if_new("tell me about vaccines")
    assert d.is_duplicate("Tell me about VACCINES!")
    assert not d.is_duplicate("what's the weather like on mars")
    assert not d.add_if_new("tell me about vaccines.")
    assert d.add_if_new("ok")  # shorter than one shingle still works
    assert not d.add_if_new("OK!")
    assert len(d) == 2


def test_minhash_estimate_tracks_true_jaccard():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    d = MinHashDeduper(num_perm=256, threshold=0.8)
    errors = []
    for _ in range(30):
        a = " ".join(rng.choices(words, k=25))
        b_words = a.split()
        for j in rng.sample(range(25), rng.randint(0, 12)):
            b_words[j] = rng.choice(words)
        b = " ".join(b_words)
        est = float(np.mean(d.signature(normalise(a)) == d.signature(normalise(b))))
        errors.append(abs(est - jaccard(a, b)))
    assert np.mean(errors) < 0.05


def test_choose_bands_midpoint_below_threshold():
    for num_perm, threshold in [(64, 0.8), (128, 0.5), (32, 0.9)]:
        bands, rows = choose_bands(num_perm, threshold)
        assert bands * rows == num_perm
        assert (1 / bands) ** (1 / rows) <= threshold


def test_deterministic_across_processes():
    code = (
        "from classifiers.ml.data.dedupe import MinHashDeduper, normalise;"
        "print(MinHashDeduper().signature(normalise('tell me about vaccines'))[:8])"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1


def test_scales_to_a_few_thousand_texts():
    rng = random.Random(1)
    vocab = [f"tok{i}" for i in range(500)]
    texts = [" ".join(rng.choices(vocab, k=12)) for _ in range(2000)]
    texts += texts[:300]  # 300 exact repeats
    kept = dedupe(texts)
    assert len(kept) == 2000
