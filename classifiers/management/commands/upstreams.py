"""manage.py upstreams: the OpenAI-compatible models the guard proxies to.

    upstreams add NAME --url URL --model MODEL [--api-key-env VAR] [--timeout S]
                       [--max-concurrency N] [--max-tokens N]
    upstreams change NAME [--url URL] [--model MODEL] [--api-key-env VAR] ...
    upstreams attach NAME --constitution SLUG     clients ask for the model SLUG/NAME
    upstreams detach NAME --constitution SLUG
    upstreams list
    upstreams remove NAME

The key is never a command-line argument (it would sit in the shell history and the
process list): name the environment variable the server reads it from, or set a
stored key on the upstream's page.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifiers.guard.upstreams import (
    UpstreamError,
    add_upstream,
    attach,
    change_upstream,
    detach,
    get_upstream,
)
from classifiers.models import Upstream
from constitutions.models import Constitution


class Command(BaseCommand):
    help = "Register OpenAI-compatible upstream models and attach them to constitutions."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        for action in ("add", "change"):
            p = sub.add_parser(action)
            p.add_argument("name")
            required = action == "add"
            p.add_argument("--url", required=required, help="base URL, e.g. http://127.0.0.1:8001/v1")
            p.add_argument("--model", required=required, help="the upstream's model name")
            p.add_argument("--api-key-env", default=None,
                           help="environment variable GUARDWEB_UPSTREAM_KEY_<NAME> holding "
                           "the upstream's API key")  # fmt: skip
            p.add_argument("--timeout", type=float, default=None,
                           help="seconds to connect, to first byte and between chunks (30)")  # fmt: skip
            p.add_argument("--max-concurrency", type=int, default=None,
                           help="requests in flight to this upstream per server process (8)")  # fmt: skip
            p.add_argument("--max-tokens", type=int, default=None,
                           help="the most new tokens one request may ask for (1024)")  # fmt: skip
        for action in ("attach", "detach"):
            p = sub.add_parser(action)
            p.add_argument("name")
            p.add_argument("--constitution", required=True, metavar="SLUG")
        sub.add_parser("list")
        p = sub.add_parser("remove")
        p.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, "do_" + options["action"])(options)
        except UpstreamError as exc:
            raise CommandError(str(exc)) from exc

    @staticmethod
    def _fields(options: dict[str, Any]) -> dict[str, Any]:
        names = {"url": "base_url", "model": "model", "api_key_env": "api_key_env",
                 "timeout": "timeout_s", "max_concurrency": "max_concurrency",
                 "max_tokens": "max_tokens"}  # fmt: skip
        return {field: options[o] for o, field in names.items() if options.get(o) is not None}

    def do_add(self, options: dict[str, Any]) -> None:
        upstream = add_upstream(name=options["name"], **self._fields(options))
        self.stdout.write(f"added {upstream} (key: {upstream.key_source}); attach it with "
                          f"`manage.py upstreams attach {upstream.name} --constitution SLUG`")  # fmt: skip

    def do_change(self, options: dict[str, Any]) -> None:
        upstream = change_upstream(get_upstream(options["name"]), **self._fields(options))
        self.stdout.write(f"changed {upstream} (key: {upstream.key_source})")

    def _constitution(self, slug: str) -> Constitution:
        constitution = Constitution.objects.filter(slug=slug).first()
        if constitution is None:
            raise CommandError(f"no constitution {slug!r}")
        return constitution

    def do_attach(self, options: dict[str, Any]) -> None:
        upstream = get_upstream(options["name"])
        constitution = self._constitution(options["constitution"])
        new = attach(upstream, constitution)
        state = "attached" if new else "was already attached"
        self.stdout.write(f"{upstream.name} {state}: clients use the model "
                          f"{constitution.slug}/{upstream.name}")  # fmt: skip

    def do_detach(self, options: dict[str, Any]) -> None:
        upstream = get_upstream(options["name"])
        constitution = self._constitution(options["constitution"])
        if not detach(upstream, constitution):
            raise CommandError(f"{upstream.name} is not attached to {constitution.slug}")
        self.stdout.write(f"{upstream.name} detached from {constitution.slug}")

    def do_list(self, options: dict[str, Any]) -> None:
        upstreams = Upstream.objects.prefetch_related("policies__constitution")
        if not upstreams:
            self.stdout.write("no upstreams; add one with `manage.py upstreams add NAME --url URL --model MODEL`")
            return
        for upstream in upstreams:
            slugs = sorted(p.constitution.slug for p in upstream.policies.all())
            models = ", ".join(f"{slug}/{upstream.name}" for slug in slugs) or "not attached"
            self.stdout.write(
                f"{upstream.name}: {upstream.model} at {upstream.base_url}; key "
                f"{upstream.key_source}; timeout {upstream.timeout_s:g}s, at most "
                f"{upstream.max_concurrency} at once, {upstream.max_tokens} tokens; "
                f"models: {models}"
            )

    def do_remove(self, options: dict[str, Any]) -> None:
        upstream = get_upstream(options["name"])
        upstream.delete()
        self.stdout.write(f"removed {upstream.name}")
