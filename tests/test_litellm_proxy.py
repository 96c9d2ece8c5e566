"""The real LiteLLM proxy with Guardweb as its guardrail (#25 item 4), no code on
LiteLLM's side: its config names Guardweb's Generic Guardrail API endpoints.

LiteLLM runs from its own virtualenv (`make litellm-deps`, part of `make test`):
its pins clash with ours (websockets), and it is a client here, not a dependency.
Its upstream is a real OpenAI-compatible server on loopback serving SmolLM2.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from classifiers.models import ApiToken, Conversation
from tests.api_helpers import BENIGN_PROMPT, HARMFUL_PROMPT, guarded_constitution
from tests.ml.openai_test_server import OpenAITestServer
from tests.upstream_helpers import direct_reply

LITELLM = Path(__file__).resolve().parents[1] / ".venv-litellm" / "bin" / "litellm"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LITELLM.exists(), reason="run `make litellm-deps` (make test does)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG = """
model_list:
  - model_name: smol
    litellm_params: {{model: openai/smol, api_base: "{upstream}", api_key: none}}
guardrails:
  - guardrail_name: guardweb-input
    litellm_params:
      guardrail: generic_guardrail_api
      mode: pre_call
      api_base: {guardweb}/guardrails/litellm/widgets
      api_key: {token}
      default_on: true
  - guardrail_name: guardweb-output
    litellm_params:
      guardrail: generic_guardrail_api
      mode: post_call
      api_base: {guardweb}/guardrails/litellm/strict
      api_key: {token}
      default_on: false
general_settings:
  master_key: sk-master
"""


@pytest.fixture
def litellm_proxy(asgi_server, live_db, alice, smollm, tmp_path):
    guarded_constitution("widgets", output=True, user=alice)
    guarded_constitution("strict", output=True, output_threshold=0.0, user=alice)
    token = ApiToken.issue(user=alice, name="litellm")[1]
    with OpenAITestServer(smollm) as upstream:
        config = tmp_path / "litellm.yaml"
        config.write_text(CONFIG.format(upstream=upstream.base_url, guardweb=asgi_server, token=token))
        port = _free_port()
        # Our DATABASE_URL / REDIS_URL would make LiteLLM set up its own tables there.
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
        log = (tmp_path / "litellm.log").open("w")
        process = subprocess.Popen(
            [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert process.poll() is None, (tmp_path / "litellm.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "LiteLLM did not start in 90 s"
                time.sleep(0.5)
            yield url, upstream
        finally:
            process.terminate()
            process.wait(timeout=20)
            log.close()


def ask(url: str, prompt: str, **extra: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": "Bearer sk-master"},
                      json={"model": "smol", "max_tokens": 16,
                            "messages": [{"role": "user", "content": prompt}], **extra},
                      timeout=120)  # fmt: skip


def test_litellm_blocks_before_the_model_and_after_it_with_guardweb(litellm_proxy):
    url, upstream = litellm_proxy
    # pre_call: a restricted request is refused; the model never sees it.
    refused = ask(url, HARMFUL_PROMPT)
    assert refused.status_code == 400, refused.text
    assert "Guardweb (widgets)" in refused.json()["error"]["message"]
    assert upstream.stats.requests == 0
    # An ordinary request passes and gets the model's reply unchanged.
    expected = direct_reply(upstream, BENIGN_PROMPT, max_tokens=16)
    answered = ask(url, BENIGN_PROMPT)
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"] == expected
    # post_call: the strict constitution's output classifier halts any reply.
    halted = ask(url, BENIGN_PROMPT, guardrails=["guardweb-output"])
    assert halted.status_code == 400 and "threshold" in halted.json()["error"]["message"]
    stored = Conversation.objects.get(flag_reason="output_halted")
    assert stored.turns.get().user_content == BENIGN_PROMPT  # matched by litellm_call_id
    assert Conversation.objects.filter(flag_reason="input_blocked").count() == 1
