"""No secrets in logs: raw API tokens and passwords never reach a log record or
the console, with every logger turned up to DEBUG (SQL included)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test import Client

from tests.conftest import PASSWORD

WRONG_PASSWORD = "hunter2-is-not-my-password-xyzzy"


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """DEBUG on every logger, SQL logging forced on (it is off without DEBUG)."""
    caplog.set_level(logging.DEBUG)
    for name in ("django", "django.request", "django.db.backends", "classifiers",
                 "guardweb", "constitutions"):  # fmt: skip
        caplog.set_level(logging.DEBUG, logger=name)
    connection.force_debug_cursor = True
    yield
    connection.force_debug_cursor = False


def _all_logged(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    formatter = logging.Formatter("%(name)s %(message)s")
    records = "\n".join(formatter.format(r) + repr(r.args) for r in caplog.records)
    out, err = capfd.readouterr()  # the root console handler writes to stderr
    return "\n".join([records, caplog.text, out, err])


@pytest.mark.django_db
def test_raw_tokens_and_passwords_never_reach_the_logs(
    alice, everything_logged, caplog, capfd
) -> None:  # type: ignore[no-untyped-def]
    from classifiers.models import ApiToken

    browser = Client()
    browser.force_login(alice)
    created = browser.post("/classifiers/tokens/", {"name": "log test"})
    assert created.status_code == 200
    raw = re.search(rb"gw_[A-Za-z0-9_\-]{20,}", created.content).group().decode()
    assert ApiToken.authenticate(raw) is not None  # the page showed the real token

    api = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert api.get("/v1/models", **auth).status_code == 200
    missing = api.post(
        "/api/v1/classify", {"constitution": "no-such", "text": "hello"},
        content_type="application/json", **auth,
    )  # fmt: skip
    assert missing.status_code in (400, 404)
    assert api.get("/v1/models", HTTP_AUTHORIZATION=f"Token {raw}").status_code == 401
    assert api.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}x").status_code == 401

    failed = Client().post("/accounts/login/", {"username": "alice", "password": WRONG_PASSWORD})
    assert failed.status_code == 200 and b'role="alert"' in failed.content
    ok = Client().post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert ok.status_code == 302

    logged = _all_logged(caplog, capfd)
    assert "SELECT" in logged  # the capture really saw the SQL and requests
    assert "/v1/models" in logged or "classify" in logged
    secret_part = raw[len("gw_") + 8 :]  # past what the key prefix may show
    assert raw not in logged
    assert secret_part not in logged
    assert WRONG_PASSWORD not in logged
    assert PASSWORD not in logged
