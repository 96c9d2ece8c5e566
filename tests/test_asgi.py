"""The one ASGI application serves HTTP through a real server and uses the Redis layer."""

from __future__ import annotations

import httpx
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def test_the_asgi_server_serves_the_login_page_and_healthz(asgi_server, live_db):
    login = httpx.get(f"{asgi_server}/accounts/login/")
    assert login.status_code == 200
    assert "Log in to Guardweb" in login.text
    health = httpx.get(f"{asgi_server}/healthz")
    assert health.json()["postgres"]["ok"] is True


def test_the_channel_layer_is_the_real_redis_one(settings):
    shared = get_channel_layer()
    assert type(shared).__module__.startswith("channels_redis")
    # A layer of our own: the process-wide one may be receiving in the ASGI
    # server's event loop, and one layer receives in one loop at a time.
    layer = type(shared)(**settings.CHANNEL_LAYERS["default"]["CONFIG"])

    async def round_trip() -> dict:
        channel = await layer.new_channel()
        await layer.group_add("layer-test", channel)
        await layer.group_send("layer-test", {"type": "hello", "n": 7})
        message = await layer.receive(channel)
        await layer.group_discard("layer-test", channel)
        return message

    assert async_to_sync(round_trip)() == {"type": "hello", "n": 7}


@pytest.mark.django_db
def test_celery_is_configured_for_the_real_broker_and_never_eager():
    from django.conf import settings

    from guardweb.celery import app

    assert app.conf.broker_url == settings.REDIS_URL
    assert not app.conf.task_always_eager
    assert {q.name for q in app.conf.task_queues} == {"default", "gpu"}
