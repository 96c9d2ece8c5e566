from __future__ import annotations

import pytest


def test_healthz_is_green_with_postgres_redis_and_a_worker_on_each_queue(
    client, celery_worker
):
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["postgres"]["ok"] and body["redis"]["ok"]
    assert body["celery"]["queues"]["default"], body
    assert body["celery"]["queues"]["gpu"], body


@pytest.mark.django_db
def test_healthz_is_503_when_no_worker_consumes_the_queues(client):
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert body["postgres"]["ok"] and body["redis"]["ok"]
    assert body["celery"]["ok"] is False
    assert "no worker consumes" in body["celery"]["error"]


@pytest.mark.django_db
def test_healthz_is_503_and_names_redis_when_redis_is_unreachable(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert body["redis"]["ok"] is False
    assert "Error" in body["redis"]["error"]


@pytest.mark.django_db(transaction=True)
def test_healthz_is_503_when_postgres_is_unreachable(client):
    from django.db import connection

    real = connection.settings_dict["PORT"], connection.settings_dict["HOST"]
    connection.close()
    connection.settings_dict["HOST"], connection.settings_dict["PORT"] = "127.0.0.1", "1"
    try:
        response = client.get("/healthz")
    finally:
        connection.close()
        connection.settings_dict["PORT"], connection.settings_dict["HOST"] = real
    body = response.json()
    assert response.status_code == 503
    assert body["postgres"]["ok"] is False
