"""Production settings: `check --deploy` passes with the production environment,
HTTPS behaviour (redirect, HSTS, proxy header) is real, and a missing SECRET_KEY
stops start-up with one clear line. Each runs manage.py in a child process, since
settings are read once at import."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def production_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDWEB_")}
    env.pop("SECRET_KEY", None)
    env.update(
        GUARDWEB_DEMO="false",
        GUARDWEB_DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(60),  # 80 random characters
        GUARDWEB_SECURE_COOKIES="true",
        ALLOWED_HOSTS="guard.example.com,testserver",
        GUARDWEB_REDIS_PREFIX="deploy-check-test",
    )
    env.update(overrides)
    return {k: v for k, v in env.items() if v != "<unset>"}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )  # fmt: skip


def test_check_deploy_passes_with_the_production_environment() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_fails_for_a_weak_key_or_plain_http_cookies() -> None:
    weak = manage(
        "check", "--deploy", "--fail-level", "WARNING",
        env=production_env(SECRET_KEY="short-and-guessable"),
    )  # fmt: skip
    assert weak.returncode != 0 and "security.W009" in weak.stderr
    plain = manage(
        "check", "--deploy", "--fail-level", "WARNING",
        env=production_env(GUARDWEB_SECURE_COOKIES="false"),
    )  # fmt: skip
    assert plain.returncode != 0
    for check in ("W004", "W008", "W012", "W016"):  # HSTS, redirect, two cookies
        assert f"security.{check}" in plain.stderr


def test_without_a_secret_key_production_start_up_fails_with_one_clear_line() -> None:
    result = manage("check", env=production_env(SECRET_KEY="<unset>"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["guardweb: SECRET_KEY is required when GUARDWEB_DEMO=false"]


PROBE = """
from django.test import Client
c = Client()
print("login", c.get("/accounts/login/").status_code, c.get("/accounts/login/").get("Location"))
print("healthz", c.get("/healthz").status_code)
r = c.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
print("proxied", r.status_code, r.get("Strict-Transport-Security"))
print("cookie", c.get("/accounts/login/", secure=True).cookies["csrftoken"]["secure"])
"""


def test_https_redirect_hsts_and_the_proxy_header_work_in_production() -> None:
    env = production_env(GUARDWEB_PROXY_SSL_HEADER="X-Forwarded-Proto")
    result = manage("shell", "-c", PROBE, env=env)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    # Plain HTTP is sent to HTTPS; health checks are not (probes speak plain HTTP).
    assert lines["login"] == "301 https://testserver/accounts/login/"
    assert lines["healthz"].split()[0] in {"200", "503"}
    # Through the TLS proxy: served, with a year of HSTS incl. subdomains.
    assert lines["proxied"] == "200 max-age=31536000; includeSubDomains"
    assert lines["cookie"] == "True"
