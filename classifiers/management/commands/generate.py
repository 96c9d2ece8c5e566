"""`manage.py generate`: build a synthetic dataset from the command line.

Same options and same code path as the web form: the Dataset row is created by
`classifiers.datasets.services.dataset_start` and built in THIS process by
`classifiers.datasets.run.run_dataset` (the function the Celery task calls),
printing progress lines as it goes.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifiers.datasets.config import StartError, generate_config
from classifiers.datasets.export import format_eta, throttled
from classifiers.datasets.run import run_dataset
from classifiers.datasets.services import dataset_start
from classifiers.models import GeneratorEndpoint, TrafficPool
from constitutions.models import ConstitutionVersion

HELP = """Generate a synthetic dataset for a published constitution version.

Runs in this process (no Celery worker needed) through the same service code as
the web form and the worker task, and records the run as a Dataset that the web
pages show (live progress included). Examples are saved only when the whole run
succeeds; an interrupted run (Ctrl-C) ends 'failed' and keeps no examples.

Example:
  manage.py generate --constitution cbrn-demo --version 1 --per-category 50 \\
      --transforms base64,rot13,roleplay_wrapper --heldout-families encoding
"""


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _split_fractions(value: str) -> dict[str, float]:
    """"train=0.6,test=0.2" -> {"train_fraction": 0.6, "test_fraction": 0.2}."""
    from argparse import ArgumentTypeError

    from classifiers.ml.data.splits import SPLITS

    fractions = {}
    for part in _csv(value):
        name, _, number = part.partition("=")
        if name.strip() not in SPLITS:
            raise ArgumentTypeError(
                f"unknown split {name.strip()!r} in {part!r}: use {', '.join(SPLITS)}"
            )
        try:
            fractions[f"{name.strip()}_fraction"] = float(number)
        except ValueError:
            raise ArgumentTypeError(f"expected split=fraction, got {part!r}") from None
    return fractions


class Command(BaseCommand):
    help = HELP

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        from argparse import RawDescriptionHelpFormatter

        # "resolve": our --version (the constitution version) replaces Django's.
        kwargs.setdefault("conflict_handler", "resolve")
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        from classifiers.ml.data.transforms import FAMILIES

        parser.add_argument("--constitution", required=True, help="constitution slug")
        parser.add_argument(
            "--version", dest="version_number", type=int, default=None,
            help="published version number (default: the latest)",
        )  # fmt: skip
        parser.add_argument("--per-category", type=int, default=50, help="1..500")
        parser.add_argument("--restricted-per-category", type=int, default=0,
                            help="1..500 queries per restricted category (default: --per-category)")  # fmt: skip
        parser.add_argument(
            "--transforms", type=_csv, default=[],
            help="comma-separated transform names; families: "
            + "; ".join(f"{f}: {', '.join(n)}" for f, n in FAMILIES.items()),
        )  # fmt: skip
        parser.add_argument(
            "--variants", type=int, default=1, help="variants per example"
        )
        parser.add_argument(
            "--heldout-families", type=_csv, default=[],
            help=f"comma-separated families kept out of training ({', '.join(FAMILIES)})",
        )  # fmt: skip
        parser.add_argument(
            "--splits", type=_split_fractions, default={},
            help="source fractions per split, e.g. train=0.6,validation=0.1,"
            "calibration=0.15,test=0.15 (default 0.7/0.1/0.1/0.1); a larger "
            "calibration split gives steadier thresholds, a larger test split "
            "steadier numbers",
        )  # fmt: skip
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--no-responses", action="store_true")
        parser.add_argument("--temperature", type=float, default=0.9)
        parser.add_argument("--top-p", type=float, default=0.95)
        parser.add_argument("--max-new-tokens-query", type=int, default=64)
        parser.add_argument("--max-new-tokens-response", type=int, default=192)
        parser.add_argument(
            "--opener-share", type=float, default=None,
            help="0..1: share of the local model's query prompts prefilled with the "
            "opening words of a category example (steers it to write requests)",
        )  # fmt: skip
        parser.add_argument(
            "--category", action="append", dest="only_categories", default=[],
            metavar="NAME",
            help="generate for this category only (repeat for several; default: all); "
            "a top-up run to combine with a full one (manage.py combine_datasets)",
        )  # fmt: skip
        parser.add_argument(
            "--redteam-templates", type=int, default=4,
            help="new jailbreak templates red-teamed when redteam_template is used",
        )  # fmt: skip
        parser.add_argument(
            "--endpoint", default=None,
            help="name of a generator endpoint (default: the embedded local model)",
        )  # fmt: skip
        parser.add_argument(
            "--traffic-pool", dest="traffic_pools", action="append", default=[],
            metavar="NAME", help="mix this traffic pool in as benign prompts (repeatable)",
        )  # fmt: skip
        parser.add_argument(
            "--traffic-limit", type=int, default=None,
            help="at most this many prompts per traffic pool (default 1000)",
        )  # fmt: skip
        parser.add_argument(
            "--traffic-generated-replies", type=int, default=None, metavar="N",
            help="only N pool prompts get the generator's reply (default: all)",
        )  # fmt: skip
        parser.add_argument(
            "--traffic-recorded-replies", type=int, default=None, metavar="N",
            help="with --traffic-generated-replies: N of the others keep the reply "
            "recorded with them (a ShareGPT pool's real replies)",
        )  # fmt: skip
        parser.add_argument("--user", default=None, help="record the run as this user")

    def handle(self, *args: Any, **opts: Any) -> None:

        versions = ConstitutionVersion.objects.filter(
            constitution__slug=opts["constitution"]
        ).order_by("-number")
        if opts["version_number"] is not None:
            versions = versions.filter(number=opts["version_number"])
        version = versions.first()
        if version is None:
            raise CommandError(
                f"no published version {opts['version_number'] or '(any)'} of "
                f"constitution {opts['constitution']!r}"
            )
        endpoint = None
        if opts["endpoint"]:
            endpoint = GeneratorEndpoint.objects.filter(name=opts["endpoint"]).first()
            if endpoint is None:
                raise CommandError(f"no generator endpoint named {opts['endpoint']!r}")
        pools = []
        for name in opts["traffic_pools"]:
            pool = TrafficPool.objects.filter(name=name).first()
            if pool is None:
                raise CommandError(f"no traffic pool named {name!r} (manage.py import_traffic)")
            pools.append(pool.pk)
        user = None
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
        try:
            config = generate_config(
                per_category=opts["per_category"],
                restricted_per_category=opts["restricted_per_category"],
                responses=not opts["no_responses"],
                transforms=opts["transforms"],
                variants_per_example=opts["variants"],
                heldout_families=opts["heldout_families"],
                seed=opts["seed"],
                temperature=opts["temperature"],
                top_p=opts["top_p"],
                max_new_tokens_query=opts["max_new_tokens_query"],
                max_new_tokens_response=opts["max_new_tokens_response"],
                redteam_templates=opts["redteam_templates"],
                only_categories=opts["only_categories"],
                traffic_pools=pools,
                traffic_limit=opts["traffic_limit"],
                traffic_generated_replies=opts["traffic_generated_replies"],
                traffic_recorded_replies=opts["traffic_recorded_replies"],
                **opts["splits"],
                **(
                    {}
                    if opts["opener_share"] is None
                    else {"opener_share": opts["opener_share"]}
                ),
            )
            dataset = dataset_start(
                version=version, config=config, user=user, endpoint=endpoint,
                enqueue=False,
            )  # fmt: skip
        except StartError as err:
            raise CommandError(str(err)) from err
        self.stdout.write(f"dataset #{dataset.pk}: {version} with {dataset.generator}")

        def line(stage: str, done: int, total: int, eta: float | None) -> None:
            self.stdout.write(
                f"  {stage:<10} {done}/{total}  ETA {format_eta(eta)}"
            )

        try:
            dataset = run_dataset(dataset.pk, echo=throttled(line))
        except KeyboardInterrupt:
            dataset.request_cancel()
            dataset.mark_failed("interrupted from the command line")
            raise CommandError(f"dataset #{dataset.pk} interrupted") from None
        if dataset.status != "done":
            raise CommandError(
                f"dataset #{dataset.pk} ended {dataset.status}: {dataset.error}"
            )
        counts = dataset.counts
        self.stdout.write(self.style.SUCCESS(
            f"dataset #{dataset.pk} done: {counts.get('total', 0)} examples"
        ))  # fmt: skip
        for key in ("category", "label", "transform", "split"):
            row = ", ".join(f"{k}={v}" for k, v in counts.get(key, {}).items())
            self.stdout.write(f"  {key}: {row}")
