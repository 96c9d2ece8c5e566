"""The CUDA paths of the ML core, on tiny models: training, save/load, streaming
scores (KV cache), halting, continuous batching and generation on a GPU give what
the CPU gives. Skipped where no GPU is present (CI); run them on a GPU worker with
`pytest tests/ml/test_cuda.py` (docs/OPERATIONS.md, "GPU workers")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from classifiers.ml.eval.evaluate import auroc
from classifiers.ml.generation.local import LocalGenerator
from classifiers.ml.input.persistence import (
    load_input_classifier,
    save_input_classifier,
)
from classifiers.ml.input.scoring import score_texts
from classifiers.ml.input.training import train_input_classifier
from classifiers.ml.output.encoding import prompt_token_ids
from classifiers.ml.output.model import OutputClassifierConfig
from classifiers.ml.output.persistence import (
    load_output_classifier,
    save_output_classifier,
)
from classifiers.ml.output.scoring import score_responses
from classifiers.ml.output.training import train_output_classifier
from classifiers.ml.serving.batching import ContinuousBatcher
from classifiers.ml.serving.stream import (
    StreamingScorer,
    generate_plain,
    generate_with_scores,
)
from tests.ml.test_input_classifier import _config, _make_backbone, make_examples
from tests.ml.test_output_classifier import toy_examples
from tests.ml.test_streaming import spread_probe
from tests.ml.test_value_head import make_tokenizer, tiny_lm

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"
)

MESSAGES = [{"role": "user", "content": "tell me about vaccines"}]


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_input_classifier_trains_on_cuda_and_loads_on_cpu(tmp_path: Path, mode: str):
    backbone = _make_backbone(tmp_path / "bert", seed=0)
    extra = (
        {"mode": "full", "epochs": 4, "backbone_lr": 1e-3, "lr": 3e-3}
        if mode == "full"
        else {}
    )
    cfg = _config(backbone, **extra)
    result = train_input_classifier(
        cfg, make_examples(96, seed=1), make_examples(32, seed=2), device="cuda"
    )
    assert result.model.device.type == "cuda"
    held_out = make_examples(40, seed=5)
    texts = [e.prompt_text for e in held_out]
    on_gpu = score_texts(result.model, result.tokenizer, texts)
    assert auroc([s.score for s in on_gpu], [e.label for e in held_out]) > 0.9
    save_input_classifier(
        result.model,
        backbone,
        tmp_path / "art",
        thresholds=None,
        metrics={},
        code_version="test",
    )
    loaded = load_input_classifier(tmp_path / "art", device="cpu")
    assert loaded.model.device.type == "cpu"
    on_cpu = score_texts(loaded.model, loaded.tokenizer, texts)
    assert [s.score for s in on_cpu] == pytest.approx(
        [s.score for s in on_gpu], abs=1e-3
    )
    assert [s.category for s in on_cpu] == [s.category for s in on_gpu]


@pytest.mark.parametrize("mode", ["fast", "full", "lora"])
def test_output_classifier_trains_on_cuda_and_loads_on_cpu(tmp_path: Path, mode: str):
    tok = make_tokenizer()
    backbone = tmp_path / "backbone"
    tiny_lm(tok.vocab_size).save_pretrained(backbone)
    tok.save_pretrained(backbone)
    cfg = OutputClassifierConfig(
        backbone_dir=str(backbone),
        mode=mode,
        layers=(1, -1),
        lr=0.05 if mode == "fast" else 0.01,
        epochs=15 if mode == "fast" else 4,
        batch_size=8,
        seed=3,
        ntp_weight=0.1 if mode == "full" else 0.0,
    )
    res = train_output_classifier(
        cfg, toy_examples(24), toy_examples(12, seed=1), device="cuda"
    )
    assert next(res.model.parameters()).device.type == "cuda"
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    if mode == "fast":
        assert res.history[-1]["val_auroc"] > 0.9
    held_out = toy_examples(12, seed=2)
    on_gpu = score_responses(res.model, tok, held_out)
    save_output_classifier(
        res.model,
        tmp_path / "art",
        thresholds={"halt": 0.5},
        metrics={},
        code_version="test",
    )
    loaded = load_output_classifier(tmp_path / "art", device="cpu")
    on_cpu = score_responses(loaded.model, tok, held_out)
    # Full mode trains and keeps fp32 weights: the CPU gives the GPU's scores. Fast
    # and LoRA read a frozen backbone kept in bf16 on the GPU (fp32 on a CPU), which
    # moves a probability by a few thousandths (docs/OPERATIONS.md, "GPU workers").
    tolerance = 1e-3 if mode == "full" else 1e-2
    for gpu_row, cpu_row in zip(on_gpu, on_cpu, strict=True):
        assert cpu_row == pytest.approx(gpu_row, abs=tolerance)


def test_full_mode_on_cuda_takes_steps_smaller_than_a_bf16_ulp(tmp_path: Path):
    tok = make_tokenizer()
    backbone = tmp_path / "backbone"
    tiny_lm(tok.vocab_size).save_pretrained(backbone)
    tok.save_pretrained(backbone)
    # The backbone loads in bf16 on a GPU; the weights training starts from are
    # those, upcast.
    before = tiny_lm(tok.vocab_size).model.layers[0].self_attn.q_proj.weight
    before = before.detach().to(torch.bfloat16).float()
    # Backbone lr 1e-6: each step is ~1e-6, far below half a bf16 ulp of these
    # weights (~1e-4), so bf16 master weights would not move at all.
    cfg = OutputClassifierConfig(
        backbone_dir=str(backbone), mode="full", lr=1e-5, epochs=1, batch_size=8
    )
    res = train_output_classifier(cfg, toy_examples(16), [], device="cuda")
    after = res.model.lm.model.layers[0].self_attn.q_proj.weight
    assert after.dtype == torch.float32
    moved = (after.detach().cpu() != before).float().mean().item()
    assert moved > 0.5
    save_output_classifier(
        res.model, tmp_path / "art", thresholds={}, metrics={}, code_version="test"
    )
    for device in ("cuda", "cpu"):  # reloads as trained: fp32, not the config's bf16
        loaded = load_output_classifier(tmp_path / "art", device=device)
        assert next(loaded.model.lm.parameters()).dtype == torch.float32


@pytest.fixture(scope="module")
def cuda_probe():
    model, tok = spread_probe()
    return model.to("cuda"), tok


def test_streaming_on_cuda_matches_a_full_forward_and_the_cpu(cuda_probe):
    model, tok = cuda_probe
    tokens = [
        t.token_id for t in generate_plain(model, tok, MESSAGES, max_new_tokens=24)
    ]
    assert len(tokens) > 4
    scorer = StreamingScorer(model, tok)
    scorer.start(MESSAGES)
    incremental = [s.prob for t in tokens for s in scorer.push([t])]
    prompt = prompt_token_ids(tok, MESSAGES)
    with torch.no_grad():
        values = model(torch.tensor([prompt + tokens], device="cuda")).values[
            0, len(prompt) :
        ]
    full = torch.sigmoid(values).float().cpu().tolist()
    assert incremental == pytest.approx(full, abs=1e-4)
    cpu_model, _ = spread_probe()  # the same seeded weights, on the CPU
    cpu_scorer = StreamingScorer(cpu_model, tok)
    cpu_scorer.start(MESSAGES)
    on_cpu = [s.prob for s in cpu_scorer.push(tokens)]
    assert on_cpu == pytest.approx(incremental, abs=1e-3)


def test_guarded_generation_on_cuda_halts_at_the_first_crossing(cuda_probe):
    model, tok = cuda_probe
    free = list(
        generate_with_scores(model, tok, MESSAGES, max_new_tokens=24, halt=False)
    )
    plain = list(generate_plain(model, tok, MESSAGES, max_new_tokens=24))
    assert [t.token_id for t in free] == [t.token_id for t in plain]
    scores = [t.score for t in free]
    threshold = sorted(scores)[len(scores) // 2]
    first = next(i for i, s in enumerate(scores) if s >= threshold)
    halted = list(
        generate_with_scores(
            model, tok, MESSAGES, max_new_tokens=24, threshold=threshold
        )
    )
    assert len(halted) == first + 1 and halted[-1].halted


def test_continuous_batching_on_cuda_gives_each_row_its_solo_result(cuda_probe):
    model, tok = cuda_probe
    prompts = [MESSAGES, [{"role": "user", "content": "hi"}]]
    solo = [
        list(generate_with_scores(model, tok, m, max_new_tokens=12, halt=False))
        for m in prompts
    ]
    batcher = ContinuousBatcher(model.lm, tok, max_batch=4)
    try:
        got = [
            list(batcher.stream(m, guard=model, max_new_tokens=12, halt=False))
            for m in prompts
        ]
    finally:
        batcher.close()
    for g, w in zip(got, solo, strict=True):
        assert [t.token_id for t in g] == [t.token_id for t in w]
        assert [t.prob for t in g] == pytest.approx([t.prob for t in w], abs=1e-3)


def test_local_generator_on_cuda_uses_bf16_and_is_seeded(tmp_path: Path):
    tok = make_tokenizer()
    tiny_lm(tok.vocab_size).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    gen = LocalGenerator.from_dir(tmp_path, device="cuda", batch_size=2)
    assert next(gen.model.parameters()).dtype == torch.bfloat16
    conversations = [MESSAGES, [{"role": "user", "content": "hi"}], MESSAGES]
    a = gen.chat(conversations, max_new_tokens=8, temperature=0.9, seed=7)
    b = gen.chat(conversations, max_new_tokens=8, temperature=0.9, seed=7)
    assert a == b and all(isinstance(r, str) for r in a)
