"""Shared fixtures: personas, a real Celery worker, a real ASGI server, a browser.

Everything runs against the real PostgreSQL and Redis chosen by the settings
(the embedded servers under the data dir, or DATABASE_URL / REDIS_URL).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

PASSWORD = "correct horse battery staple"


@pytest.fixture
def make_user(django_user_model):  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import Group

    def make(username: str, *roles: str, **extra: object):  # type: ignore[no-untyped-def]
        user = django_user_model.objects.create_user(username, password=PASSWORD, **extra)
        for role in roles:
            # get_or_create: transactional tests flush the groups the migration made.
            user.groups.add(Group.objects.get_or_create(name=role)[0])
        return user

    return make


@pytest.fixture
def alice(make_user):  # type: ignore[no-untyped-def]
    """Alice, a policy author."""
    return make_user("alice", "policy_author")


@pytest.fixture
def operator(make_user):  # type: ignore[no-untyped-def]
    """Olga, a policy author who is also staff: she runs the infrastructure
    (generator endpoints, upstream models)."""
    return make_user("olga", "policy_author", is_staff=True)


@pytest.fixture
def bob(make_user):  # type: ignore[no-untyped-def]
    """Bob, a reviewer."""
    return make_user("bob", "reviewer")


@pytest.fixture
def victor(make_user):  # type: ignore[no-untyped-def]
    """Victor, a viewer."""
    return make_user("victor", "viewer")


@pytest.fixture
def charlie(make_user):  # type: ignore[no-untyped-def]
    """Charlie, logged in but with no role."""
    return make_user("charlie")


@pytest.fixture
def celery_worker(transactional_db) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A real Celery worker (in a thread) consuming both queues from the real broker."""
    from celery.contrib.testing.worker import start_worker

    from guardweb.celery import app

    with start_worker(
        app,
        queues=["default", "gpu"],
        pool="solo",
        perform_ping_check=False,
        shutdown_timeout=30,
        loglevel="WARNING",
    ) as worker:
        yield worker


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def asgi_server() -> Iterator[str]:
    """The real ASGI app under uvicorn on a loopback port; yields its base URL.

    It runs in a thread of the test process so it sees the test database; the test
    using it must also request `transactional_db` (or `live_db`) so data it writes
    is committed and visible to the server.
    """
    import uvicorn

    from guardweb.asgi import application

    port = _free_port()
    config = uvicorn.Config(
        application, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def live_db(transactional_db) -> None:  # type: ignore[no-untyped-def]
    """Committed data, visible to the ASGI server and worker threads."""


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium for one test module.

    Module-scoped, not session-scoped: Playwright's sync API keeps an event loop
    running in this thread while it is open, which would break every later test
    that calls asyncio.run() or async_to_sync().
    """
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is missing: run `make test` (it installs Debian's chromium)")
    # Playwright's loop runs in this thread; the ORM calls the tests make around it
    # are ordinary sync code. Restored afterwards so no later test (or a child
    # process it starts) inherits it.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser) -> Iterator[object]:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def login(page, asgi_server):  # type: ignore[no-untyped-def]
    """Log a user in through the real login form."""

    def do_login(user) -> object:  # type: ignore[no-untyped-def]
        page.goto(f"{asgi_server}/accounts/login/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("[data-testid=username]")
        return page

    return do_login


@pytest.fixture(autouse=True)
def fresh_channel_layer() -> Iterator[None]:
    """A new channel-layer instance per test.

    One channels-redis layer receives in one event loop at a time. Tests run
    consumers in two loops (the uvicorn thread's and the test's own, for
    WebsocketCommunicator); a consumer left over from the previous test must not
    share its layer instance with this test's consumers.
    """
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield


@pytest.fixture(scope="module")
def smollm():  # type: ignore[no-untyped-def]
    """The packaged SmolLM2 as a ChatGenerator, for loopback upstream servers."""
    from classifiers.core.model_cache import shared_generator
    from classifiers.ml.generation.local import LocalGenerator

    lm, tokenizer = shared_generator()
    return LocalGenerator(lm, tokenizer, batch_size=1, name="smollm-upstream")
