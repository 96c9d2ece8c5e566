"""Output-classifier losses (hand-computed), batching, training modes, save/load."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from classifiers.ml.output.encoding import collate, encode_example, prompt_token_ids
from classifiers.ml.output.losses import ntp_loss, running_max_loss, window_loss
from classifiers.ml.output.model import OutputClassifierConfig
from classifiers.ml.output.persistence import (
    load_output_classifier,
    save_output_classifier,
)
from classifiers.ml.output.scoring import (
    final_scores,
    halting_positions,
    score_responses,
)
from classifiers.ml.output.training import train_output_classifier
from classifiers.ml.types import Cancelled, Example
from tests.ml.test_value_head import make_tokenizer, tiny_lm


def _logits(probs: list[list[float]]) -> torch.Tensor:
    return torch.logit(torch.tensor(probs, dtype=torch.float64)).float()


def _bce(p: float, y: int) -> float:
    return -math.log(p) if y == 1 else -math.log(1 - p)


@pytest.mark.parametrize(
    "progress,expected",
    [(0.0, [0.2, 0.6, 0.4]), (1.0, [0.2, 0.6, 0.6]), (0.5, [0.2, 0.6, 0.5])],
)
def test_running_max_loss_hand_computed(progress, expected):
    # Row 0: a prompt token with p=0.9 first (masked out: must not leak into the
    # running max), then the response; row 1: a benign response padded at the end.
    logits = _logits([[0.9, 0.2, 0.6, 0.4], [0.3, 0.1, 0.5, 0.5]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    labels = torch.tensor([1, 0])
    row1 = [0.3, (1 - progress) * 0.1 + progress * 0.3]
    want = (
        sum(_bce(p, 1) for p in expected) / 3 + sum(_bce(p, 0) for p in row1) / 2
    ) / 2
    got = running_max_loss(logits, labels, mask, progress).item()
    assert got == pytest.approx(want, rel=1e-5)


def test_window_loss_hand_computed():
    # Softmax over logits = weights proportional to the odds p / (1 - p).
    logits = _logits([[0.2, 0.6, 0.4]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    preds = [
        0.2,
        (0.25 * 0.2 + 1.5 * 0.6) / 1.75,
        (1.5 * 0.6 + (2 / 3) * 0.4) / (1.5 + 2 / 3),
    ]
    want = sum(_bce(p, 1) for p in preds) / 3
    assert window_loss(
        logits, torch.tensor([1]), mask, window=2
    ).item() == pytest.approx(want, rel=1e-5)
    # Window 1 is plain per-token BCE.
    plain = sum(_bce(p, 0) for p in [0.2, 0.6, 0.4]) / 3
    assert window_loss(
        logits, torch.tensor([0]), mask, window=1
    ).item() == pytest.approx(plain, rel=1e-5)


def test_window_loss_ignores_prompt_tokens():
    mask = torch.tensor([[0, 1, 1]], dtype=torch.bool)
    high_prompt = window_loss(_logits([[0.99, 0.2, 0.6]]), torch.tensor([1]), mask, 4)
    low_prompt = window_loss(_logits([[0.01, 0.2, 0.6]]), torch.tensor([1]), mask, 4)
    assert high_prompt.item() == pytest.approx(low_prompt.item(), rel=1e-6)


def test_ntp_loss_only_on_response_tokens():
    torch.manual_seed(0)
    lm_logits = torch.randn(1, 4, 10)
    ids = torch.tensor([[1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1]], dtype=torch.bool)
    want = F.cross_entropy(lm_logits[0, 1:3], ids[0, 2:4])
    assert ntp_loss(lm_logits, ids, mask).item() == pytest.approx(want.item(), rel=1e-6)


def test_encode_example_masks_exactly_the_response_and_truncates():
    tok = make_tokenizer()
    ex = Example(
        [{"role": "user", "content": "tell me about vaccines"}],
        "vaccines train the immune system",
        0,
        "bio",
        "q1",
    )
    enc = encode_example(tok, ex, max_length=512)
    prompt = prompt_token_ids(tok, ex.messages)
    response = tok(ex.response, add_special_tokens=False)["input_ids"]
    assert enc.input_ids == prompt + response and enc.response_start == len(prompt)
    batch = collate([enc, encode_example(tok, ex, max_length=len(prompt) + 2)], 0)
    assert batch["response_mask"][0].sum() == len(response)
    assert batch["input_ids"][0, batch["response_mask"][0]].tolist() == response
    # Truncated: the response keeps its start, right padding follows.
    short = batch["input_ids"][1, batch["response_mask"][1]].tolist()
    assert short == response[: len(short)] and len(short) >= 2
    assert batch["attention_mask"][1].sum() == len(prompt) + 2


def test_final_scores_and_halting_positions():
    scores = [[0.1, 0.7, 0.2], [0.1, 0.2], []]
    assert final_scores(scores) == [0.7, 0.2, 0.0]
    assert halting_positions(scores, 0.5) == [1, None, None]
    assert halting_positions(scores, 0.1) == [0, 0, None]
    # One threshold per response (per-category thresholds).
    assert halting_positions(scores, [0.5, 0.1, 0.5]) == [1, 0, None]


def toy_examples(n: int, seed: int = 0) -> list[Example]:
    """Label decided by a phrase in the response (innocuous placeholders)."""
    import random

    rng = random.Random(seed)
    harmful = ["here is the forbidden widget plan", "the forbidden widget needs this"]
    benign = ["here is a friendly garden plan", "the garden needs water today"]
    out = []
    for i in range(n):
        label = i % 2
        text = rng.choice(harmful if label else benign)
        out.append(
            Example(
                [{"role": "user", "content": "how do I make the thing"}],
                text,
                label,
                "widgets",
                f"q{i}",
            )
        )
    return out


def _train(mode: str = "fast", **kw):
    tok = make_tokenizer()
    cfg = OutputClassifierConfig(
        mode=mode,
        lr=kw.pop("lr", 0.05),
        epochs=kw.pop("epochs", 15),
        batch_size=8,
        seed=3,
        **kw,
    )
    return train_output_classifier(
        cfg,
        toy_examples(24),
        toy_examples(12, seed=1),
        lm=tiny_lm(tok.vocab_size),
        tokenizer=tok,
        device="cpu",
        **{},
    )


def test_fast_mode_learns_deterministically_and_reports_progress():
    stages = []
    tok = make_tokenizer()
    cfg = OutputClassifierConfig(
        mode="fast", layers=(1, -1), lr=0.05, epochs=15, batch_size=8, seed=3
    )
    results = [
        train_output_classifier(
            cfg,
            toy_examples(24),
            toy_examples(12, seed=1),
            lm=tiny_lm(tok.vocab_size),
            tokenizer=tok,
            device="cpu",
            on_progress=lambda **kw: stages.append(kw["stage"]),
        )
        for _ in range(2)
    ]
    a, b = results
    assert {"encode", "train"} <= set(stages)
    assert a.history == b.history  # seeded: identical curves
    assert torch.equal(a.model.v_head.summary.weight, b.model.v_head.summary.weight)
    assert len(a.history) == 15 and a.history[-1]["loss"] < a.history[0]["loss"]
    assert a.history[-1]["val_auroc"] > 0.9
    assert a.tokens_per_s > 0
    # The per-token scores from the cache match a fresh full forward.
    fresh = score_responses(a.model, tok, toy_examples(12, seed=1))
    assert all(
        torch.allclose(torch.tensor(x), torch.tensor(y), atol=1e-5)
        for x, y in zip(fresh, a.val_scores, strict=True)
    )


def test_training_can_be_cancelled():
    tok = make_tokenizer()
    cfg = OutputClassifierConfig(mode="fast", epochs=2)
    with pytest.raises(Cancelled):
        train_output_classifier(
            cfg,
            toy_examples(8),
            [],
            lm=tiny_lm(tok.vocab_size),
            tokenizer=tok,
            device="cpu",
            should_cancel=lambda: True,
        )


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_backbone_modes_update_the_right_weights(mode):
    tok = make_tokenizer()
    lm = tiny_lm(tok.vocab_size)
    base_q = lm.model.layers[0].self_attn.q_proj.weight.detach().clone()
    embed = lm.model.embed_tokens.weight.detach().clone()
    cfg = OutputClassifierConfig(
        mode=mode,
        loss="window",
        window=4,
        lr=0.01,
        epochs=2,
        batch_size=8,
        ntp_weight=0.1 if mode == "full" else 0,
    )
    res = train_output_classifier(
        cfg,
        toy_examples(16),
        toy_examples(4, seed=1),
        lm=lm,
        tokenizer=tok,
        device="cpu",
    )
    assert len(res.history) == 2 and math.isfinite(res.history[-1]["val_loss"])
    q = res.model.lm.model.layers[0].self_attn.q_proj
    if mode == "full":
        assert not torch.equal(lm.model.embed_tokens.weight, embed)
    else:
        assert torch.equal(q.base.weight, base_q)  # frozen under the adapter
        assert torch.equal(lm.model.embed_tokens.weight, embed)
        assert q.lora_b.abs().sum() > 0


@pytest.mark.parametrize("mode", ["fast", "full", "lora"])
def test_save_load_round_trip(tmp_path, mode):
    tok = make_tokenizer()
    backbone = tmp_path / "backbone"
    tiny_lm(tok.vocab_size).save_pretrained(backbone)
    tok.save_pretrained(backbone)
    cfg = OutputClassifierConfig(
        backbone_dir=str(backbone), mode=mode, epochs=1, batch_size=8, lr=0.01
    )
    res = train_output_classifier(cfg, toy_examples(8), [], device="cpu")
    checksum = save_output_classifier(
        res.model,
        tmp_path / "art",
        thresholds={"halt": 0.5},
        metrics={"auroc": 0.9},
        code_version="test",
    )
    loaded = load_output_classifier(tmp_path / "art", device="cpu")
    assert loaded.checksum == checksum and loaded.thresholds == {"halt": 0.5}
    assert loaded.config == cfg
    want = res.model.state_dict()
    got = loaded.model.state_dict()
    assert set(want) == set(got)
    assert all(torch.equal(want[k], got[k]) for k in want)
    examples = toy_examples(4, seed=2)
    assert score_responses(loaded.model, loaded.tokenizer, examples) == score_responses(
        res.model, tok, examples
    )
