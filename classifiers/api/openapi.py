"""The hand-written OpenAPI 3.1 document for the guard API (GET /api/openapi.json).

Kept beside the views it describes; tests validate real responses against the
required fields of these schemas, so a drift shows up as a failing test.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from classifiers.api.requests import MAX_BODY_BYTES

NUMBER_OR_NULL = {"type": ["number", "null"]}
STRING_OR_NULL = {"type": ["string", "null"]}
INT_OR_NULL = {"type": ["integer", "null"]}

MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant"]},
        "content": {
            "description": "Text, or OpenAI's list of text parts.",
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {
                    "type": "object", "required": ["type", "text"],
                    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                }},
            ],
        },
    },
}  # fmt: skip

MODEL_REF = {
    "type": ["object", "null"],
    "description": "The classifier (a ModelVersion) that scored the request.",
    "required": ["id", "kind", "checksum"],
    "properties": {
        "id": {"type": "integer"},
        "kind": {"type": "string", "enum": ["input", "output"]},
        "checksum": {"type": "string"},
    },
}

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": STRING_OR_NULL,
                "code": STRING_OR_NULL,
            },
        }
    },
}

CLASSIFY_REQUEST = {
    "type": "object",
    "description": (
        "Exactly one of text or messages. Messages ending with an assistant message "
        "score that reply with the output classifier (a ReplyScore answer); "
        "reply_stream scores a reply chunk by chunk (messages, the prompt, on the "
        "first call)."
    ),
    "properties": {
        "reply_stream": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"},
                "delta": {"type": "string", "description": "The reply's next chunk."},
                "final": {"type": "boolean", "default": False},
            },
        },
        "text": {"type": "string", "minLength": 1},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {"$ref": "#/components/schemas/Message"},
        },
        "constitution": {
            "type": "string",
            "description": "Constitution slug; defaults to the token's constitution.",
        },
    },
}

CLASSIFY_RESPONSE = {
    "type": "object",
    "required": ["id", "score", "blocked", "flagged", "threshold", "category", "model",
                 "mode", "constitution", "conversation_id"],
    "properties": {
        "id": {"type": "string"},
        "score": {**NUMBER_OR_NULL, "description": "Harm probability (null in mode off)."},
        "blocked": {"type": "boolean", "description": "flagged and the mode is enforce"},
        "flagged": {"type": "boolean", "description": "score >= threshold"},
        "threshold": NUMBER_OR_NULL,
        "category": {**STRING_OR_NULL, "description": "Most likely category."},
        "category_prob": NUMBER_OR_NULL,
        "model": {"$ref": "#/components/schemas/ModelRef"},
        "mode": {"type": "string", "enum": ["enforce", "shadow", "off"]},
        "constitution": {"type": "string"},
        "conversation_id": {"type": "integer", "description": "Stored for review."},
    },
}  # fmt: skip

REPLY_SCORE = {
    "type": "object",
    "description": "The output classifier on a reply (whole, or a stream's next chunk).",
    "required": ["id", "object", "tokens", "released", "max_score", "threshold",
                 "halt_index", "halted", "verdict", "mode", "constitution"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "const": "reply_score"},
        "stream_id": {"type": "string"},
        "tokens": {
            "type": "array",
            "items": {"type": "object", "required": ["text", "score"],
                      "properties": {"text": {"type": "string"}, "score": NUMBER_OR_NULL}},
        },
        "released": {"type": "string", "description": "Text cleared to forward now."},
        "max_score": NUMBER_OR_NULL,
        "threshold": NUMBER_OR_NULL,
        "halt_index": {**INT_OR_NULL, "description": "Token where enforce halts."},
        "halted": {"type": "boolean"},
        "verdict": {"type": "string", "enum": ["pass", "halt", "pending"]},
        "mode": {"type": "string", "enum": ["enforce", "shadow", "off"]},
        "constitution": {"type": "string"},
        "model": {"$ref": "#/components/schemas/ModelRef"},
        "conversation_id": {"type": "integer", "description": "Stored when the reply ends."},
    },
}  # fmt: skip

LITELLM_REQUEST = {
    "type": "object",
    "description": "LiteLLM's Generic Guardrail API request (docs/UPSTREAMS.md).",
    "required": ["input_type"],
    "properties": {
        "input_type": {"type": "string", "enum": ["request", "response"]},
        "texts": {"type": ["array", "null"], "items": {"type": "string"}},
        "structured_messages": {"type": ["array", "null"], "items": {"type": "object"}},
        "litellm_call_id": STRING_OR_NULL,
        "additional_provider_specific_params": {"type": ["object", "null"]},
    },
}

LITELLM_RESPONSE = {
    "type": "object",
    "required": ["action"],
    "properties": {
        "action": {"type": "string", "enum": ["BLOCKED", "NONE"]},
        "blocked_reason": {"type": "string"},
    },
}

GUARD = {
    "type": "object",
    "description": "The guard's decisions and scores for this reply.",
    "required": ["mode", "blocked", "halted", "halted_at", "input_score",
                 "input_category", "threshold", "token_scores", "conversation_id"],
    "properties": {
        "mode": {"type": "string", "enum": ["enforce", "shadow", "off"]},
        "blocked": {"type": "boolean", "description": "The input classifier refused."},
        "halted": {"type": "boolean", "description": "The output classifier stopped the reply."},
        "halted_at": {**INT_OR_NULL, "description": "Token index where it crossed."},
        "would_block": {"type": "boolean", "description": "Shadow mode: enforce would have."},
        "flagged": {"type": "boolean"},
        "flag_reason": STRING_OR_NULL,
        "input_score": NUMBER_OR_NULL,
        "input_category": STRING_OR_NULL,
        "input_threshold": NUMBER_OR_NULL,
        "threshold": {**NUMBER_OR_NULL, "description": "The output threshold."},
        "max_output_score": NUMBER_OR_NULL,
        "token_scores": {
            "type": "array",
            "items": {"type": "object", "required": ["text", "score"],
                      "properties": {"text": {"type": "string"}, "score": NUMBER_OR_NULL}},
        },
        "input_model": {"$ref": "#/components/schemas/ModelRef"},
        "output_model": {"$ref": "#/components/schemas/ModelRef"},
        "conversation_id": {"type": "integer"},
    },
}  # fmt: skip

CHAT_REQUEST = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": {
            "type": "string",
            "description": (
                "A constitution slug (guarded, in the token's mode or else the "
                "constitution's), '<slug>:unguarded' (no scoring; policy authors "
                "only), or '<slug>/<upstream>' (an upstream model attached to the "
                "constitution, behind its guard). Omitted: the token's default "
                "constitution. See /v1/models."
            ),
        },
        "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Message"}},
        "stream": {"type": "boolean", "default": False},
        "max_tokens": {
            "type": "integer", "minimum": 1,
            "description": "At most the constitution's max_new_tokens (else 400); "
                           "default: that limit. max_completion_tokens is accepted too.",
        },
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 0,
                        "description": "0 = greedy (reproducible scores)."},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "seed": {"type": "integer"},
        "n": {"type": "integer", "const": 1},
    },
}  # fmt: skip

FINISH_REASON = {
    "type": ["string", "null"],
    "enum": ["stop", "length", "content_filter", None],
}

CHAT_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "guard"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {
            "type": "object", "required": ["index", "message", "finish_reason"],
            "properties": {
                "index": {"type": "integer"},
                "message": {"type": "object", "required": ["role", "content"], "properties": {
                    "role": {"const": "assistant"},
                    "content": {"type": "string", "description": "Includes the refusal."},
                    "refusal": STRING_OR_NULL,
                }},
                "finish_reason": FINISH_REASON,
            },
        }},
        "usage": {"type": "object", "properties": {
            "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
        }},
        "guard": {"$ref": "#/components/schemas/Guard"},
    },
}  # fmt: skip

CHAT_CHUNK = {
    "type": "object",
    "description": "One SSE event `data: {chunk}`; the stream ends with `data: [DONE]`. "
                   "The chunk carrying finish_reason also carries `guard`.",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion.chunk"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {
            "type": "object", "required": ["index", "delta", "finish_reason"],
            "properties": {
                "index": {"type": "integer"},
                "delta": {"type": "object", "properties": {
                    "role": {"const": "assistant"}, "content": {"type": "string"},
                }},
                "finish_reason": FINISH_REASON,
            },
        }},
        "guard": {"$ref": "#/components/schemas/Guard"},
    },
}  # fmt: skip

MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
        "guard": {"type": "object", "properties": {
            "constitution": {"type": "string"}, "name": {"type": "string"},
            "guarded": {"type": "boolean"},
            "input_model": {"$ref": "#/components/schemas/ModelRef"},
            "output_model": {"$ref": "#/components/schemas/ModelRef"},
        }},
    },
}  # fmt: skip

MODEL_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
        },
    }


COMMON_ERRORS = {
    "400": _error("Invalid JSON, missing or wrongly typed fields, empty messages, an "
                  "unknown role, or max_tokens over the constitution's limit."),
    "401": _error("Missing, invalid or revoked API token."),
    "404": _error("Unknown constitution or model."),
    "413": _error(f"A message over the constitution's max_message_chars, or a body "
                  f"over {MAX_BODY_BYTES} bytes."),
    "429": _error("Over the constitution's requests per minute for this user; see the "
                  "Retry-After header (seconds)."),
    "503": _error("No classifier is active for the constitution."),
}  # fmt: skip


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Guardweb guard API",
        "version": "1.0.0",
        "description": (
            "Constitutional classifiers as a service. Authenticate with "
            "`Authorization: Bearer <token>` (create tokens under Classifiers → API "
            "tokens). A token's mode (enforce | shadow | off) overrides the "
            "constitution's. Every request that passes validation is stored as a "
            "conversation for review; rejected requests store nothing. Concurrent "
            "classify requests are batched dynamically (up to 32 per model call)."
        ),
    },
    "servers": [{"url": "/"}],
    "security": [{"bearerAuth": []}],
    "paths": {
        "/api/v1/classify": {
            "post": {
                "operationId": "classify",
                "summary": "Score a prompt with the active input classifier.",
                "requestBody": {"required": True, "content": _json("ClassifyRequest")},
                "responses": {
                    "200": {
                        "description": "The decision (or a ReplyScore for a reply).",
                        "content": {"application/json": {"schema": {"oneOf": [
                            {"$ref": "#/components/schemas/ClassifyResponse"},
                            {"$ref": "#/components/schemas/ReplyScore"},
                        ]}}},
                    },
                    "409": _error("The reply stream has ended."),
                    **COMMON_ERRORS,
                },
            }
        },
        "/v1/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "summary": "OpenAI-compatible guarded chat completion (local model).",
                "description": (
                    "Blocked prompts get a refusal; replies the output classifier halts "
                    "end with the partial text and a refusal. Both have finish_reason "
                    "content_filter. With stream=true the body is text/event-stream."
                ),
                "requestBody": {
                    "required": True,
                    "content": _json("ChatCompletionRequest"),
                },
                "responses": {
                    "200": {
                        "description": "The completion, or an SSE stream of chunks.",
                        "content": {
                            **_json("ChatCompletion"),
                            "text/event-stream": {
                                "schema": {
                                    "$ref": "#/components/schemas/ChatCompletionChunk"
                                }
                            },
                        },
                    },
                    "403": _error("The unguarded model needs the policy_author role."),
                    "502": _error("An upstream model is unreachable or failed."),
                    "504": _error("An upstream model did not answer in time."),
                    **COMMON_ERRORS,
                },
            }
        },
        "/beta/litellm_basic_guardrail_api": {
            "post": {
                "operationId": "litellmGuardrail",
                "summary": "LiteLLM's Generic Guardrail API (also under /guardrails/litellm/{slug}/...).",
                "description": "The token may come as x-api-key, as LiteLLM sends it.",
                "requestBody": {"required": True, "content": _json("LiteLLMGuardrailRequest")},
                "responses": {
                    "200": {"description": "The verdict.", "content": _json("LiteLLMGuardrailResponse")},
                    **COMMON_ERRORS,
                },
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "Constitutions with an active classifier, as model ids.",
                "responses": {
                    "200": {
                        "description": "The models.",
                        "content": _json("ModelList"),
                    },
                    "401": COMMON_ERRORS["401"],
                },
            }
        },
        "/v1/models/{model}": {
            "get": {
                "operationId": "retrieveModel",
                "parameters": [
                    {
                        "name": "model",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],  # fmt: skip
                "responses": {
                    "200": {"description": "The model.", "content": _json("Model")},
                    "401": COMMON_ERRORS["401"],
                    "404": COMMON_ERRORS["404"],
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Message": MESSAGE,
            "ModelRef": MODEL_REF,
            "Error": ERROR,
            "ClassifyRequest": CLASSIFY_REQUEST,
            "ReplyScore": REPLY_SCORE,
            "LiteLLMGuardrailRequest": LITELLM_REQUEST,
            "LiteLLMGuardrailResponse": LITELLM_RESPONSE,
            "ClassifyResponse": CLASSIFY_RESPONSE,
            "Guard": GUARD,
            "ChatCompletionRequest": CHAT_REQUEST,
            "ChatCompletion": CHAT_COMPLETION,
            "ChatCompletionChunk": CHAT_CHUNK,
            "Model": MODEL,
            "ModelList": MODEL_LIST,
        },
    },
}


@login_not_required
@require_GET
def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(DOCUMENT)
