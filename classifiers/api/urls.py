"""The API at the site root: /api/v1/..., /v1/... (OpenAI-compatible), /api/openapi.json."""

from __future__ import annotations

from django.urls import path

from classifiers.api import litellm, openapi, views

app_name = "api"
urlpatterns = [
    path("api/v1/classify", views.classify, name="classify"),
    path("v1/chat/completions", views.chat_completions, name="chat-completions"),
    path("v1/models", views.models, name="models"),
    path("v1/models/<path:model_id>", views.model_detail, name="model"),
    path("api/openapi.json", openapi.openapi_json, name="openapi"),
    # LiteLLM's Generic Guardrail API: api_base http://HOST/guardrails/litellm/SLUG
    # (or http://HOST with the constitution in the token or the guardrail's params).
    path("guardrails/litellm/<slug:slug>/beta/litellm_basic_guardrail_api", litellm.guardrail,
         name="litellm-guardrail"),
    path("beta/litellm_basic_guardrail_api", litellm.guardrail, name="litellm-guardrail-default"),
]
