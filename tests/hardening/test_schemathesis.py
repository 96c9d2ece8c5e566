"""Schemathesis fuzzes every operation of the served OpenAPI schema: never a 5xx.

The schema is the document `/api/openapi.json` serves (loaded from the module so
collection needs no server); the requests go to the real ASGI server.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from classifiers.api.openapi import DOCUMENT
from classifiers.models import ApiToken
from tests.api_helpers import guarded_constitution

pytestmark = pytest.mark.slow

schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture
def api_token(live_db, alice) -> str:  # type: ignore[no-untyped-def]
    # Small generation limits keep each fuzzed chat completion quick.
    constitution = guarded_constitution(
        "widgets", output=True, max_new_tokens=4, requests_per_minute=10_000
    )
    _, raw = ApiToken.issue(user=alice, name="fuzz", constitution=constitution)
    return raw


def test_the_fuzzed_schema_is_the_served_one(client):
    assert client.get("/api/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_with_a_server_error(case, asgi_server, api_token):  # type: ignore[no-untyped-def]
    response = case.call(
        base_url=asgi_server, headers={"Authorization": f"Bearer {api_token}"}, timeout=60
    )
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
