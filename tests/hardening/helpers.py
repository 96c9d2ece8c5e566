"""Shared helpers for the hardening tests: every route, and one object of each kind.

All text is innocuous placeholder content ("forbidden widgets" vs garden soup).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

ROLES = ("anonymous", "charlie", "viewer", "reviewer", "policy_author", "admin")


@dataclass(frozen=True)
class Route:
    name: str  # "namespace:name", or the pattern for unnamed (admin) routes
    pattern: str  # the full pattern, e.g. "classifiers/datasets/<int:pk>/"


def walk(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[Route]:
    """Every HTTP route under `patterns`, namespaces included."""
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = namespace + (f"{entry.namespace}:" if entry.namespace else "")
            yield from walk(entry.url_patterns, prefix + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            full = prefix + str(entry.pattern)
            name = f"{namespace}{entry.name}" if entry.name else full
            yield Route(name=name, pattern=full)


def all_http_routes() -> list[Route]:
    return list(walk(get_resolver().url_patterns))


def all_websocket_routes() -> list[str]:
    from guardweb.urls import websocket_urlpatterns

    return [str(entry.pattern) for entry in websocket_urlpatterns]


@dataclass
class World:
    """One of everything a route can point at, and a user per role."""

    users: dict[str, Any]
    slug: str
    category: int
    version: int
    dataset: int
    example: int
    endpoint: int
    upstream: int
    run: int
    model: int
    other_model: int
    token: int  # owned by the policy author
    review_item: int
    feedback: int
    cascade: int  # a finished cascade calibration of the constitution
    audit: int  # a finished label audit of the dataset
    audit_item: int  # one of its queued items
    traffic_pool: int
    evaluation_set: int
    evaluation_run: int  # a finished run of the input model on it


def make_users(make_user: Any) -> dict[str, Any]:
    users: dict[str, Any] = {"anonymous": None}
    users["charlie"] = make_user("charlie")
    users["viewer"] = make_user("victor", "viewer")
    users["reviewer"] = make_user("bob", "reviewer")
    users["policy_author"] = make_user("alice", "policy_author")
    users["admin"] = make_user("root", is_superuser=True, is_staff=True)
    return users


def build_world(make_user: Any) -> World:
    from classifiers.models import (
        ApiToken,
        CascadeCalibration,
        DatasetExample,
        EvaluationRun,
        EvaluationSet,
        FeedbackExample,
        GeneratorEndpoint,
        LabelAudit,
        LabelAuditItem,
        TrafficPool,
    )
    from constitutions.models import Category
    from tests.factories import published_constitution
    from tests.review_helpers import flagged_conversation
    from tests.training_helpers import make_dataset, make_model

    users = make_users(make_user)
    version = published_constitution("widgets", user=users["policy_author"])
    constitution = version.constitution
    dataset = make_dataset(version)
    model = make_model(dataset, "input")
    other = make_model(dataset, "output", seed=1)
    endpoint = GeneratorEndpoint.objects.create(
        name="nowhere", base_url="http://127.0.0.1:9/v1", model="none", timeout_seconds=1,
        max_retries=0,
    )  # fmt: skip
    from classifiers.models import Upstream

    upstream = Upstream.objects.create(name="nowhere", base_url="http://127.0.0.1:9/v1", model="none")
    token, _raw = ApiToken.issue(user=users["policy_author"], name="matrix")
    conversation = flagged_conversation(constitution)
    item = conversation.review_item
    feedback = FeedbackExample.objects.create(
        constitution=constitution, review_item=item, prompt_text="how do I clean my widget",
        messages=[{"role": "user", "content": "how do I clean my widget"}], label=0,
        category="garden care", decision="false_positive", created_by=users["reviewer"],
    )  # fmt: skip
    cascade = CascadeCalibration.objects.create(
        constitution=constitution, probe_model=other, heavy_model=other, status="done",
        settings={"band": [0.2, 0.6], "weight": 0.5, "threshold": 0.7},
    )  # fmt: skip
    audit = LabelAudit.objects.create(
        dataset=dataset, status="done", config={"folds": 5, "spot_check": 0},
        summary={"generated_sources": 24, "generated_suspects": 1},
    )  # fmt: skip
    audit_item = LabelAuditItem.objects.create(
        audit=audit, source_id="garden-1", text="what is the best soil for roses", label=1,
        category="forbidden widgets", harm_score=0.05, suspect=True,
        suggested_category="garden care", rank=0,
    )  # fmt: skip
    pool = TrafficPool.objects.create(name="everyday", stats={"total": 0})
    evaluation_set = EvaluationSet.objects.create(
        name="garden", stats={"prompts": 0, "harmful": 0, "benign": 0, "kinds": {}}
    )
    evaluation_run = EvaluationRun.objects.create(
        evaluation_set=evaluation_set, model_version=model, status="done",
        report={"name": "garden", "overall": {"n": 0}, "per_kind": {}, "warnings": []},
    )  # fmt: skip
    return World(
        users=users, slug=constitution.slug, cascade=cascade.pk, audit=audit.pk,
        traffic_pool=pool.pk, evaluation_set=evaluation_set.pk,
        evaluation_run=evaluation_run.pk,
        audit_item=audit_item.pk,
        category=Category.objects.filter(constitution=constitution).first().pk,
        version=version.number, dataset=dataset.pk,
        example=DatasetExample.objects.filter(dataset=dataset).first().pk,
        endpoint=endpoint.pk, upstream=upstream.pk, run=model.training_run_id, model=model.pk,
        other_model=other.pk, token=token.pk, review_item=item.pk, feedback=feedback.pk,
    )  # fmt: skip
