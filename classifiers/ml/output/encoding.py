"""Token ids for the output classifier: chat template, examples, batches.

`prompt_token_ids` is the prompt as the generator sees it (chat template plus the
assistant header); serving uses it too, so training and serving tokenise alike.
`encode_example` marks where the response starts; `collate` pads a batch with
`tokenizer_pad_id(tokenizer)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from classifiers.ml.types import Example, Message

# ------------------------------------------------------------------------ tokenising


def prompt_token_ids(tokenizer: Any, messages: list[Message]) -> list[int]:
    """The prompt rendered by the chat template, ending in the assistant header."""
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def response_token_ids(tokenizer: Any, response: str) -> list[int]:
    return list(tokenizer(response, add_special_tokens=False)["input_ids"])


@dataclass
class EncodedExample:
    input_ids: list[int]  # prompt + response token ids
    response_start: int  # index of the first response token
    label: int  # 1 harmful, 0 benign


def encode_example(tokenizer: Any, example: Example, max_length: int) -> EncodedExample:
    """Prompt ids + response ids, concatenated as ids (not re-tokenised as one text)
    so training sees exactly the tokens a streaming guard sees. Over max_length, the
    response keeps its start (where the halting decision matters) and the prompt is
    cut from the left (keeping the assistant header next to the response)."""
    prompt = prompt_token_ids(tokenizer, example.messages)
    response = response_token_ids(tokenizer, example.response)
    if len(prompt) + len(response) > max_length:
        keep_prompt = min(len(prompt), max_length - min(len(response), max_length // 2))
        prompt = prompt[len(prompt) - keep_prompt :]
        response = response[: max_length - keep_prompt]
    return EncodedExample(prompt + response, len(prompt), int(example.label))


def collate(encoded: list[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded training batch with a mask over exactly the response tokens."""
    T = max(len(e.input_ids) for e in encoded)
    B = len(encoded)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros(B, T, dtype=torch.long)  # (B, T)
    response_mask = torch.zeros(B, T, dtype=torch.bool)  # (B, T)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        attention_mask[i, :n] = 1
        response_mask[i, e.response_start : n] = True
    labels = torch.tensor([e.label for e in encoded], dtype=torch.long)  # (B,)
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        labels=labels,
    )


def tokenizer_pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0
