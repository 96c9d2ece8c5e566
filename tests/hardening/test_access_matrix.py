"""Access control: every route × every role, for GET and POST, against one table.

The table below is the spec. A route that exists but is not in the table fails
the suite (so a new page cannot ship without deciding who may use it). Each
request runs in a savepoint that is rolled back, so one role's POST never changes
what the next role sees.

Outcomes: ok (passed access control: 2xx/3xx, or a 400 form error for an empty
POST), login (redirect to the login page), 401/403/404/405.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.contrib import admin
from django.db import transaction
from django.test import Client
from django.urls import reverse

from tests.hardening.helpers import ROLES, World, all_http_routes, build_world
from tests.hardening.urls_sample import ADMIN_PREFIX, SAMPLE_URLS, sample_url

# Rows of outcomes in ROLES order: anonymous, charlie (no role), viewer, reviewer,
# policy_author, admin (superuser).
READ = "login 403 ok ok ok ok"  # any role reads
AUTHOR = "login 403 403 403 ok ok"  # policy authors change things
QUEUE = "login 403 403 ok ok ok"  # the review queue: reviewers and authors
REVIEWER = "login 403 403 ok 403 ok"  # claim/assign/decide: reviewers only
OPERATOR = "login 403 403 403 403 ok"  # upstreams: staff only (the admin here)
AUTH_405 = "login 405 405 405 405 405"  # wrong method, behind the login
PUBLIC = "ok ok ok ok ok ok"
PUBLIC_405 = "405 405 405 405 405 405"
API_401 = "401 401 401 401 401 401"  # the API wants a bearer token, never a session

# route name -> (GET row, POST row)
EXPECTED: dict[str, tuple[str, str]] = {
    "home": ("login ok ok ok ok ok", AUTH_405),
    "healthz": ("503|ok " * 6, PUBLIC_405),  # 503 when no worker listens (here)
    "metrics": (PUBLIC, PUBLIC_405),
    "login": (PUBLIC, PUBLIC),
    "logout": (AUTH_405, "login login login login login login"),  # POST logs out
    "constitutions:list": (READ, AUTHOR),
    "constitutions:import": (READ, AUTHOR),
    "constitutions:detail": (READ, AUTH_405),
    "constitutions:header": (AUTH_405, AUTHOR),
    "constitutions:category_add": (AUTH_405, AUTHOR),
    "constitutions:validate": (AUTH_405, AUTHOR),
    "constitutions:category": (READ, AUTH_405),
    "constitutions:category_edit": (AUTHOR, AUTHOR),
    "constitutions:category_autosave": (AUTH_405, AUTHOR),
    "constitutions:category_move": (AUTH_405, AUTHOR),
    "constitutions:category_delete": (AUTH_405, AUTHOR),
    "constitutions:publish": (AUTH_405, AUTHOR),
    "constitutions:history": (READ, AUTH_405),
    "constitutions:version": (READ, AUTH_405),
    "constitutions:diff": (READ, AUTH_405),
    "constitutions:audit": (READ, AUTH_405),
    "constitutions:export": (READ, AUTH_405),
    "classifiers:overview": (READ, AUTH_405),
    "classifiers:datasets": (READ, AUTH_405),
    "classifiers:dataset_new": (READ, AUTHOR),
    "classifiers:dataset_combine": (AUTH_405, AUTHOR),
    "classifiers:jailbreak_templates": (READ, AUTH_405),
    "classifiers:traffic_pools": (READ, AUTHOR),
    "classifiers:traffic_pool": (READ, AUTH_405),
    "classifiers:traffic_from_shadow": (AUTH_405, AUTHOR),
    "classifiers:traffic_from_sharegpt": (AUTH_405, AUTHOR),
    "classifiers:evaluation_sets": (READ, AUTHOR),
    "classifiers:evaluation_set": (READ, AUTH_405),
    "classifiers:evaluation_start": (AUTH_405, AUTHOR),
    "classifiers:evaluation_progress": (READ, AUTH_405),
    "classifiers:evaluation_cancel": (AUTH_405, AUTHOR),
    "classifiers:dataset": (READ, AUTH_405),
    "classifiers:dataset_progress": (READ, AUTH_405),
    "classifiers:dataset_cancel": (AUTH_405, AUTHOR),
    "classifiers:dataset_example": (READ, AUTH_405),
    "classifiers:dataset_export": (READ, AUTH_405),
    "classifiers:label_audit_start": (AUTH_405, AUTHOR),
    "classifiers:label_audit": (READ, AUTH_405),
    "classifiers:label_audit_progress": (READ, AUTH_405),
    "classifiers:label_audit_cancel": (AUTH_405, AUTHOR),
    "classifiers:label_audit_decide": (AUTH_405, QUEUE),  # reviewers and authors decide
    "classifiers:label_audit_learn": (AUTH_405, QUEUE),  # orders the queue: deciders
    "classifiers:label_audit_apply": (AUTH_405, AUTHOR),
    # Endpoints are infrastructure: staff change and test them (#26 item 5).
    "classifiers:endpoints": (READ, OPERATOR),
    "classifiers:endpoint_edit": (OPERATOR, OPERATOR),
    "classifiers:endpoint_delete": (AUTH_405, OPERATOR),
    "classifiers:endpoint_test": (AUTH_405, OPERATOR),
    "classifiers:training_new": (READ, AUTHOR),
    "classifiers:training": (READ, AUTH_405),
    "classifiers:training_progress": (READ, AUTH_405),
    "classifiers:training_history": (READ, AUTH_405),
    "classifiers:training_cancel": (AUTH_405, AUTHOR),
    "classifiers:models": (READ, AUTH_405),
    "classifiers:model_compare": (READ, AUTH_405),
    "classifiers:model": (READ, AUTH_405),
    "classifiers:model_report": (READ, AUTH_405),
    "classifiers:model_activate": (AUTH_405, AUTHOR),
    "classifiers:playground": (READ, AUTH_405),
    "classifiers:guard-settings": (READ, AUTHOR),
    "classifiers:cascade-start": (AUTH_405, AUTHOR),
    "classifiers:cascade-off": (AUTH_405, AUTHOR),
    "classifiers:cascade-use": (AUTH_405, AUTHOR),
    "classifiers:cascade-cancel": (AUTH_405, AUTHOR),
    # Any role has API tokens; the sample token is the author's: others get 404.
    "classifiers:tokens": (READ, "login 403 ok ok ok ok"),
    "classifiers:token-revoke": (AUTH_405, "login 403 404 404 ok 404"),
    "classifiers:review": (QUEUE, AUTH_405),
    "classifiers:review_bulk": (AUTH_405, REVIEWER),
    "classifiers:review_export": (QUEUE, AUTH_405),
    "classifiers:review_item": (QUEUE, AUTH_405),
    "classifiers:review_claim": (AUTH_405, REVIEWER),
    "classifiers:review_release": (AUTH_405, REVIEWER),
    "classifiers:review_assign": (AUTH_405, REVIEWER),
    "classifiers:review_decide": (AUTH_405, REVIEWER),
    "classifiers:review_feedback_index": (QUEUE, AUTH_405),
    "classifiers:review_feedback": (QUEUE, AUTH_405),
    "classifiers:review_feedback_remove": (AUTH_405, AUTHOR),
    "classifiers:review_retrain": (AUTH_405, AUTHOR),
    "classifiers:dashboard": (READ, AUTH_405),
    "classifiers:upstreams": (READ, OPERATOR),
    "classifiers:upstream-edit": (OPERATOR, OPERATOR),
    "classifiers:upstream-delete": (AUTH_405, OPERATOR),
    "api:classify": (PUBLIC_405, API_401),
    "api:chat-completions": (PUBLIC_405, API_401),
    "api:models": (API_401, PUBLIC_405),
    "api:model": (API_401, PUBLIC_405),
    "api:openapi": (PUBLIC, PUBLIC_405),
    "api:litellm-guardrail": (PUBLIC_405, API_401),
    "api:litellm-guardrail-default": (PUBLIC_405, API_401),
}


def outcome(response: Any) -> str:
    location = response.get("Location", "")
    if response.status_code in (301, 302) and "/accounts/login/" in location:
        return "login"
    if response.status_code in (401, 403, 404, 405, 503):
        return str(response.status_code)
    if response.status_code >= 500:
        return f"500({response.status_code})"
    # An empty POST that passes the access check may be answered with a form error.
    return "ok"


def _allowed(expected: str, got: str) -> bool:
    return got in expected.split("|")


class _Rollback(Exception):
    pass


def _request(client: Client, user: Any, method: str, url: str) -> Any:
    try:
        with transaction.atomic():
            if user is not None:
                client.force_login(user)  # a POST to logout must not leak onwards
            response = getattr(client, method)(url)
            raise _Rollback
    except _Rollback:
        return response


@pytest.fixture
def world(db, make_user) -> World:  # type: ignore[no-untyped-def]
    return build_world(make_user)


def test_every_http_route_is_in_the_access_table(db) -> None:
    names = {r.name for r in all_http_routes() if not r.pattern.startswith(ADMIN_PREFIX)}
    missing = sorted(names - EXPECTED.keys())
    without_sample = sorted(names - SAMPLE_URLS.keys())
    assert not missing, f"routes with no access rule in the table: {missing}"
    assert not without_sample, f"routes with no sample URL: {without_sample}"
    stale = sorted(EXPECTED.keys() - names)
    assert not stale, f"table rows for routes that no longer exist: {stale}"


def test_every_route_answers_every_role_as_the_table_says(world: World) -> None:
    client = Client(raise_request_exception=False)
    wrong: list[str] = []
    for name, (get_row, post_row) in EXPECTED.items():
        url = sample_url(name, world)
        for method, row in (("get", get_row), ("post", post_row)):
            for role, expected in zip(ROLES, row.split(), strict=True):
                client.logout()
                got = outcome(_request(client, world.users[role], method, url))
                if not _allowed(expected, got):
                    wrong.append(f"{method.upper()} {url} as {role}: {got}, want {expected}")
    assert not wrong, "\n".join(wrong)


def test_the_admin_site_is_for_staff_only(world: World) -> None:
    urls = [reverse("admin:index")] + [
        reverse(f"admin:{m._meta.app_label}_{m._meta.model_name}_changelist")
        for m in admin.site._registry
    ]
    client = Client(raise_request_exception=False)
    for url in urls:
        for role in ROLES:
            client.logout()
            response = _request(client, world.users[role], "get", url)
            if role == "admin":
                assert response.status_code == 200, (url, response.status_code)
            else:  # everyone else is sent to a login form (the admin's or the site's)
                assert response.status_code == 302, (url, role, response.status_code)
                assert "login/" in response["Location"], (url, role)


def test_api_tokens_of_every_role_work_and_roleless_or_revoked_tokens_do_not(
    world: World,
) -> None:
    from classifiers.models import ApiToken

    client = Client()
    for role in ROLES[1:]:
        token, raw = ApiToken.issue(user=world.users[role], name=f"{role} token")
        auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
        listed = client.get("/v1/models", **auth)
        bad_body = client.post("/api/v1/classify", "{}", "application/json", **auth)
        if role == "charlie":  # a user with no role: the token opens nothing
            assert listed.status_code == 403, listed.content
            assert bad_body.status_code == 403
            continue
        assert listed.status_code == 200, (role, listed.content)
        assert bad_body.status_code == 400, (role, bad_body.content)  # past the auth
        token.revoked_at = token.created_at
        token.save()
        assert client.get("/v1/models", **auth).status_code == 401
    wrong = {"HTTP_AUTHORIZATION": "Bearer gw_not-a-real-token"}
    assert client.get("/v1/models", **wrong).status_code == 401
    assert client.get("/v1/models", HTTP_AUTHORIZATION="Basic abc").status_code == 401


# --- CSRF ------------------------------------------------------------------------

FORM_POSTS = [
    name for name, (_get, post) in EXPECTED.items()
    if not name.startswith("api:") and "ok" in post.split()[4:]
]  # fmt: skip


def test_every_form_post_without_a_csrf_token_is_refused(world: World) -> None:
    from constitutions.models import Category

    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    before = Category.objects.count()
    refused = []
    for name in FORM_POSTS:
        url = sample_url(name, world)
        client.force_login(world.users["admin"])
        response = client.post(url, {"name": "x"})
        refused.append((name, response.status_code))
    assert all(status == 403 for _name, status in refused), refused
    assert Category.objects.count() == before
    assert len(refused) >= 25  # every author/reviewer POST route was sampled


def test_the_login_form_itself_needs_a_csrf_token(world: World) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "alice", "password": "x"})
    assert response.status_code == 403


# API tokens are stored as SHA-256 only: tests/test_tokens_views.py and
# tests/test_api_errors.py cover it (not repeated here).

# --- Websockets -------------------------------------------------------------------

WS_PATHS = {
    "ws/jobs/<str:kind>/<int:pk>/": "/ws/jobs/dataset/{w.dataset}/",
    "ws/playground/": "/ws/playground/",
    "ws/dashboard/": "/ws/dashboard/",
}


def test_every_websocket_route_has_a_sample_path(db) -> None:
    from tests.hardening.helpers import all_websocket_routes

    missing = sorted(set(all_websocket_routes()) - WS_PATHS.keys())
    assert not missing, f"websocket routes with no access check: {missing}"


def _cookie_for(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def _connects(path: str, cookie: bytes | None, origin: bytes) -> bool:
    from channels.testing import WebsocketCommunicator

    from guardweb.asgi import application

    headers = [(b"origin", origin), (b"host", b"testserver")]
    if cookie:
        headers.append((b"cookie", cookie))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _code = await communicator.connect(timeout=10)
    await communicator.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)
def test_websockets_refuse_anonymous_roleless_and_foreign_origin_users(make_user) -> None:
    world = build_world(make_user)
    cookies = {role: _cookie_for(u) for role, u in world.users.items() if u}
    own, foreign = b"http://testserver", b"http://evil.example"
    results = {}
    for template in WS_PATHS.values():
        path = template.format(w=world)
        for role in ROLES:
            cookie = cookies.get(role)
            results[(path, role)] = asyncio.run(_connects(path, cookie, own))
            if role == "viewer":
                results[(path, "foreign")] = asyncio.run(_connects(path, cookie, foreign))
    wrong = {
        key: connected for key, connected in results.items()
        if connected != (key[1] not in ("anonymous", "charlie", "foreign"))
    }  # fmt: skip
    assert not wrong, wrong
