"""Helpers for the tests of upstream models: register and attach one, ask it directly."""

from __future__ import annotations

import httpx
from django.core.management import call_command

from classifiers.models import Upstream
from tests.ml.openai_test_server import OpenAITestServer

MAX_TOKENS = 24


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def attach(slug: str, server: OpenAITestServer, name: str = "local", **fields) -> Upstream:
    call_command("upstreams", "add", name, "--url", server.base_url, "--model", "smol",
                 *[f"--{k.replace('_', '-')}={v}" for k, v in fields.items()])  # fmt: skip
    call_command("upstreams", "attach", name, "--constitution", slug)
    return Upstream.objects.get(name=name)


def direct_reply(server: OpenAITestServer, prompt: str, max_tokens: int = MAX_TOKENS) -> str:
    response = httpx.post(f"{server.base_url}/chat/completions", timeout=120, json={
        "model": "smol", "messages": user(prompt), "max_tokens": max_tokens,
    })  # fmt: skip
    return response.json()["choices"][0]["message"]["content"]
