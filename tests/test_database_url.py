"""DATABASE_URL parsing: percent-decoding, libpq options, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from guardweb.database_url import DatabaseUrlError, database_settings

ROOT = Path(__file__).resolve().parent.parent


def test_user_password_and_name_are_percent_decoded_and_options_kept():
    parsed = database_settings(
        "postgresql://app%40corp:p%40ss%2Fw0rd@db.internal:6543/guard%20web"
        "?sslmode=require&application_name=guardweb&target_session_attrs=read-write"
    )
    assert parsed == {
        "HOST": "db.internal", "PORT": "6543", "USER": "app@corp", "PASSWORD": "p@ss/w0rd",
        "NAME": "guard web",
        "OPTIONS": {"sslmode": "require", "application_name": "guardweb",
                    "target_session_attrs": "read-write"},
    }  # fmt: skip
    assert database_settings("postgres://localhost") == {
        "HOST": "localhost", "PORT": "5432", "USER": "postgres", "PASSWORD": "",
        "NAME": "guardweb", "OPTIONS": {},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:p@h/db", "must be a postgres:// URL"),
        ("postgres://u:secret@h:notaport/db", "port that is not a number"),
        ("postgres://u:secret@h/db?sslmode", "NAME=VALUE pairs"),
    ],
)
def test_a_bad_url_is_one_clear_error_without_the_password(url, message):
    with pytest.raises(DatabaseUrlError, match=message) as caught:
        database_settings(url)
    assert "secret" not in str(caught.value)


def test_the_options_reach_the_server():
    """A real connection through the URL's options: the server sees them."""
    base = os.environ.get("DATABASE_URL") or pytest.skip("needs DATABASE_URL")
    url = base + ("&" if "?" in base else "?") + "application_name=guardweb-url-test"
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'guardweb.settings');"
        "django.setup(); from django.db import connection;"
        "c = connection.cursor(); c.execute('show application_name'); print(c.fetchone()[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DATABASE_URL": url},
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "guardweb-url-test", out.stderr[-2000:]
