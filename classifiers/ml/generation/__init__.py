"""Generation: chat generators behind ONE protocol, `types.ChatGenerator`
(`chat(conversations, ...) -> list[str]`, one reply per conversation). Stage I
data (data/) and the LLM augmentations only ever talk to that protocol.

  sampling.py       SamplingConfig, `sample_next_token` (greedy / temperature /
                    top-p for a batch), CHAT_END_TOKENS, GeneratorError.
  local.py          LocalGenerator: a local Hugging Face causal LM, batched decoding
                    by hand (left padding, KV cache, seeded).
  openai_compat.py  OpenAICompatGenerator: any OpenAI-compatible chat endpoint
                    (vLLM, llama.cpp, hosted), with retries and one-line errors.

Guarded generation (a value head reading each step) is serving/, not here.
"""
