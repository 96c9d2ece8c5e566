"""A concrete URL for every route, built from one World of sample objects."""

from __future__ import annotations

from collections.abc import Callable

from tests.hardening.helpers import World

C = "/constitutions/{w.slug}"
K = "/classifiers"

# route name -> URL template (str.format with w=World). Query strings are part of it.
SAMPLE_URLS: dict[str, str] = {
    "home": "/",
    "healthz": "/healthz",
    "metrics": "/metrics",
    "login": "/accounts/login/",
    "logout": "/accounts/logout/",
    "constitutions:list": "/constitutions/",
    "constitutions:import": "/constitutions/import/",
    "constitutions:detail": C + "/",
    "constitutions:header": C + "/header/",
    "constitutions:category_add": C + "/categories/add/",
    "constitutions:validate": C + "/categories/validate/",
    "constitutions:category": C + "/categories/{w.category}/",
    "constitutions:category_edit": C + "/categories/{w.category}/edit/",
    "constitutions:category_autosave": C + "/categories/{w.category}/autosave/",
    "constitutions:category_move": C + "/categories/{w.category}/move/",
    "constitutions:category_delete": C + "/categories/{w.category}/delete/",
    "constitutions:publish": C + "/publish/",
    "constitutions:history": C + "/history/",
    "constitutions:version": C + "/versions/{w.version}/",
    "constitutions:diff": C + "/diff/",
    "constitutions:audit": C + "/audit/",
    "constitutions:export": C + "/export/",
    "classifiers:overview": K + "/",
    "classifiers:datasets": K + "/datasets/",
    "classifiers:dataset_new": K + "/datasets/new/",
    "classifiers:dataset_combine": K + "/datasets/combine/",
    "classifiers:jailbreak_templates": K + "/datasets/templates/",
    "classifiers:traffic_pools": K + "/traffic/",
    "classifiers:traffic_pool": K + "/traffic/{w.traffic_pool}/",
    "classifiers:traffic_from_shadow": K + "/traffic/from-shadow/",
    "classifiers:traffic_from_sharegpt": K + "/traffic/from-sharegpt/",
    "classifiers:evaluation_sets": K + "/evaluation-sets/",
    "classifiers:evaluation_set": K + "/evaluation-sets/{w.evaluation_set}/",
    "classifiers:evaluation_start": K + "/evaluation-sets/{w.evaluation_set}/score/",
    "classifiers:evaluation_progress": K + "/evaluations/{w.evaluation_run}/progress/",
    "classifiers:evaluation_cancel": K + "/evaluations/{w.evaluation_run}/cancel/",
    "classifiers:dataset": K + "/datasets/{w.dataset}/",
    "classifiers:dataset_progress": K + "/datasets/{w.dataset}/progress/",
    "classifiers:dataset_cancel": K + "/datasets/{w.dataset}/cancel/",
    "classifiers:dataset_example": K + "/datasets/{w.dataset}/examples/{w.example}/",
    "classifiers:dataset_export": K + "/datasets/{w.dataset}/export.jsonl",
    "classifiers:endpoints": K + "/endpoints/",
    "classifiers:endpoint_edit": K + "/endpoints/{w.endpoint}/",
    "classifiers:endpoint_delete": K + "/endpoints/{w.endpoint}/delete/",
    "classifiers:endpoint_test": K + "/endpoints/{w.endpoint}/test/",
    "classifiers:upstreams": K + "/upstreams/",
    "classifiers:upstream-edit": K + "/upstreams/{w.upstream}/",
    "classifiers:upstream-delete": K + "/upstreams/{w.upstream}/delete/",
    "classifiers:training_new": K + "/datasets/{w.dataset}/train/",
    "classifiers:training": K + "/training/{w.run}/",
    "classifiers:training_progress": K + "/training/{w.run}/progress/",
    "classifiers:training_history": K + "/training/{w.run}/history.json",
    "classifiers:training_cancel": K + "/training/{w.run}/cancel/",
    "classifiers:models": K + "/models/",
    "classifiers:model_compare": K + "/models/compare/?a={w.model}&b={w.other_model}",
    "classifiers:model": K + "/models/{w.model}/",
    "classifiers:model_report": K + "/models/{w.model}/report.json",
    "classifiers:model_activate": K + "/models/{w.model}/activate/",
    "classifiers:playground": K + "/playground/",
    "classifiers:guard-settings": K + "/guard/{w.slug}/",
    "classifiers:label_audit_start": K + "/datasets/{w.dataset}/audit/",
    "classifiers:label_audit": K + "/audits/{w.audit}/",
    "classifiers:label_audit_progress": K + "/audits/{w.audit}/progress/",
    "classifiers:label_audit_cancel": K + "/audits/{w.audit}/cancel/",
    "classifiers:label_audit_decide": K + "/audits/{w.audit}/items/{w.audit_item}/",
    "classifiers:label_audit_learn": K + "/audits/{w.audit}/learn/",
    "classifiers:label_audit_apply": K + "/audits/{w.audit}/apply/",
    "classifiers:cascade-start": K + "/guard/{w.slug}/cascade/",
    "classifiers:cascade-off": K + "/guard/{w.slug}/cascade/off/",
    "classifiers:cascade-use": K + "/guard/{w.slug}/cascade/{w.cascade}/use/",
    "classifiers:cascade-cancel": K + "/guard/{w.slug}/cascade/{w.cascade}/cancel/",
    "classifiers:tokens": K + "/tokens/",
    "classifiers:token-revoke": K + "/tokens/{w.token}/revoke/",
    "classifiers:review": K + "/review/",
    "classifiers:review_bulk": K + "/review/bulk/",
    "classifiers:review_export": K + "/review/export.csv",
    "classifiers:review_item": K + "/review/{w.review_item}/",
    "classifiers:review_claim": K + "/review/{w.review_item}/claim/",
    "classifiers:review_release": K + "/review/{w.review_item}/release/",
    "classifiers:review_assign": K + "/review/{w.review_item}/assign/",
    "classifiers:review_decide": K + "/review/{w.review_item}/decide/",
    "classifiers:review_feedback_index": K + "/review/feedback/",
    "classifiers:review_feedback": K + "/review/feedback/{w.slug}/",
    "classifiers:review_feedback_remove": K + "/review/feedback/{w.slug}/{w.feedback}/remove/",
    "classifiers:review_retrain": K + "/review/feedback/{w.slug}/retrain/",
    "classifiers:dashboard": K + "/dashboard/",
    "api:classify": "/api/v1/classify",
    "api:chat-completions": "/v1/chat/completions",
    "api:models": "/v1/models",
    "api:model": "/v1/models/widgets",
    "api:openapi": "/api/openapi.json",
    "api:litellm-guardrail": "/guardrails/litellm/{w.slug}/beta/litellm_basic_guardrail_api",
    "api:litellm-guardrail-default": "/beta/litellm_basic_guardrail_api",
}

# The admin site's routes are unnamed here (its own URLconf names them "admin:..."),
# and they share one rule: staff only. They are checked by a sample of admin pages.
ADMIN_PREFIX = "admin/"


def sample_url(route_name: str, world: World) -> str:
    return SAMPLE_URLS[route_name].format(w=world)


def url_builder(route_name: str) -> Callable[[World], str]:
    return lambda world: sample_url(route_name, world)
