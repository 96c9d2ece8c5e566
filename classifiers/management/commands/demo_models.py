"""manage.py demo_models: a small dataset and both classifiers for each demo constitution.

Runs through the same service code as the UI (classifiers.datasets to generate,
classifiers.training to train), in this process, with the embedded SmolLM2. First
it imports one shared pool of real everyday traffic: opening messages users shared
from ChatGPT, with the replies they got (ShareGPT, `manage.py import_traffic
--sharegpt`), which every demo dataset mixes in as benign traffic: without it the
guard has never seen an ordinary request and blocks them. Cached: the pool is
imported once, and a constitution that already has an active input AND output
model is skipped.

Why real traffic and not the generator's (`manage.py generate_traffic`, the
recipe of sessions 14-15): SmolLM2's everyday requests are short, clean and alike,
and 300 of them took 7 minutes on 2 cores; thresholds calibrated on them let the
output classifier halt 4% of everyday replies and 30% of sensitive ones from
outside (docs/BENCHMARKS.md, session 15). Thousands of real messages cost seconds
and calibrate on the traffic a guard will see.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifiers.datasets.config import StartError, generate_config
from classifiers.datasets.export import format_eta, throttled
from classifiers.datasets.run import run_dataset
from classifiers.datasets.services import dataset_start
from classifiers.datasets.traffic import TrafficError, import_sharegpt
from classifiers.models import Dataset, TrafficPool
from classifiers.training.registry import active_model
from classifiers.training.run import run_training_job
from classifiers.training.services import training_start
from constitutions.models import Constitution

DEMO_SLUGS = ("cbrn-demo", "fraud-demo")
DEMO_DATASET = {
    # Small on purpose: the author's 4-5 examples per category plus a few generated
    # ones keep the first `make demo` to minutes on 2 CPU cores. Permitted
    # categories are the sensitive-but-benign look-alikes of the restricted ones
    # ("What should I do if someone opened a credit card in my name?"): with 8 each,
    # fraud-demo's input classifier blocked 7 of 30 such outside prompts while
    # refusing 0.5% of real everyday traffic (docs/BENCHMARKS.md, session 17).
    "per_category": 16,
    # Restricted categories get three times as many: with 8, fraud-demo trained on
    # 20 harmful rows against ~130 benign ones and its guard blocked 18% of
    # StrongREJECT's fraud-like prompts (dev half); 24 took it to 30% there and to
    # 5 of 8 on the holdout half (was 3), refusing no everyday prompt
    # (docs/BENCHMARKS.md, session 15). It costs about 10 minutes of the first run;
    # reusing the pool's replies across both datasets saves about 3 of them.
    "restricted_per_category": 24,
    "responses": True,
    "transforms": ["base64", "rot13", "leetspeak", "roleplay_wrapper"],
    "variants_per_example": 1,
    # The encoding family (base64, rot13) never reaches training: the held-out
    # split measures generalisation to obfuscations the classifier has not seen.
    "heldout_families": ["encoding"],
    "max_new_tokens_query": 40,
    # The demo's timing and cache were measured without prefilled openers.
    "opener_share": 0.0,
    "max_new_tokens_response": 40,
    "redteam_templates": 0,
    # SmolLM2 often refuses or repeats itself on restricted topics; a few rounds
    # bound the time, accepting fewer queries than asked for.
    "max_rounds": 2,
    "batch_size": 24,
}
# The shared everyday pool: real messages from ShareGPT's "dev" part (its
# "holdout" part is kept for reports). Each dataset mixes in DEMO_TRAFFIC_LIMIT of
# them, spread over the splits (calibration: ~35%, enough benign prompts for a 1%
# target). The output classifier learns from replies to DEMO_GENERATED_REPLIES of
# them in SmolLM2's own style (the model the playground serves) and from the
# recorded ChatGPT replies of DEMO_RECORDED_REPLIES others; each reply is a forward
# of the scoring model in training, which bounds both.
DEMO_TRAFFIC_POOL = "everyday (ShareGPT)"
DEMO_TRAFFIC_PROMPTS = 4000
DEMO_TRAFFIC_LIMIT = 1500
DEMO_GENERATED_REPLIES = 160
DEMO_RECORDED_REPLIES = 400
DEMO_TRAINING = {
    "input_mode": "fast",
    "output_mode": "fast",
    "input_epochs": 30,
    "output_epochs": 3,
    "target_fpr": 0.01,
    "output_max_length": 160,
    # Thresholds set on replies this long: the playground's replies and real
    # upstream ones run longer than the 40 tokens generated here.
    "output_calibration_max_length": 384,
}


class Command(BaseCommand):
    help = "Generate a small dataset and train + activate both classifiers per demo constitution."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slug", action="append", default=None,
                            help="only this constitution (repeatable)")  # fmt: skip
        parser.add_argument("--per-category", type=int, default=DEMO_DATASET["per_category"])
        parser.add_argument("--force", action="store_true",
                            help="train again even when active models exist")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        pool = None
        for slug in options["slug"] or DEMO_SLUGS:
            constitution = Constitution.objects.filter(slug=slug).first()
            if constitution is None:
                self.stdout.write(f"{slug}: not seeded, skipped")
                continue
            live = [active_model(constitution, kind) for kind in ("input", "output")]
            if all(live) and not options["force"]:
                self.stdout.write(f"{slug}: active models #{live[0].pk} and #{live[1].pk}, skipped")
                continue
            pool = pool or self._traffic_pool()
            started = time.monotonic()
            dataset = self._dataset(constitution, options["per_category"], pool)
            self._train(dataset)
            self.stdout.write(self.style.SUCCESS(
                f"{slug}: ready in {time.monotonic() - started:.0f} s"
            ))  # fmt: skip

    def _traffic_pool(self) -> TrafficPool:
        pool = TrafficPool.objects.filter(name=DEMO_TRAFFIC_POOL).first()
        if pool is not None and pool.stats.get("total"):
            self.stdout.write(f"everyday traffic: reusing pool #{pool.pk} ({pool.stats['total']} requests)")
            return pool
        self.stdout.write(
            "everyday traffic: importing real user messages from ShareGPT (once)"
        )
        started = time.monotonic()
        try:
            pool = import_sharegpt(
                name=DEMO_TRAFFIC_POOL, user=None, limit=DEMO_TRAFFIC_PROMPTS
            )
        except TrafficError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"  pool #{pool.pk}: {pool.stats['total']} everyday requests in "
            f"{time.monotonic() - started:.0f} s"
        )
        return pool

    def _dataset(self, constitution: Any, per_category: int, pool: TrafficPool) -> Any:
        version = constitution.latest_version()
        if version is None:
            raise CommandError(f"{constitution.slug} has no published version")
        config = generate_config(**{
            **DEMO_DATASET, "per_category": per_category, "traffic_pools": [pool.pk],
            "traffic_limit": DEMO_TRAFFIC_LIMIT,
            "traffic_generated_replies": DEMO_GENERATED_REPLIES,
            "traffic_recorded_replies": DEMO_RECORDED_REPLIES,
        })  # fmt: skip
        # Reuse a finished demo dataset of this version with this config (cache).
        cached = Dataset.objects.filter(
            constitution_version=version, status="done", config=config
        ).first()
        if cached is not None:
            self.stdout.write(f"{constitution.slug}: reusing dataset #{cached.pk}")
            return cached
        try:
            dataset = dataset_start(
                version=version, config=config, user=None, enqueue=False
            )
        except StartError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{constitution.slug}: generating dataset #{dataset.pk}")
        started = time.monotonic()

        def line(stage: str, done: int, total: int, eta: float | None) -> None:
            self.stdout.write(f"  {stage:<12} {done}/{total}  ETA {format_eta(eta)}")

        dataset = run_dataset(dataset.pk, echo=throttled(line, 3.0))
        if dataset.status != "done":
            raise CommandError(f"dataset #{dataset.pk} {dataset.status}: {dataset.error}")
        self.stdout.write(
            f"  dataset #{dataset.pk}: {dataset.counts.get('total', '?')} examples "
            f"in {time.monotonic() - started:.0f} s"
        )
        return dataset

    def _train(self, dataset: Any) -> None:

        run = training_start(
            dataset=dataset, config=DEMO_TRAINING, user=None, activate_when_done=True,
            enqueue=False,
        )  # fmt: skip
        started = time.monotonic()
        self.stdout.write(f"  training run #{run.pk}")
        run_training_job(run.pk, echo=lambda text: self.stdout.write(f"  {text}"))
        run.refresh_from_db()
        if run.status != "done":
            raise CommandError(f"training run #{run.pk} {run.status}: {run.error}")
        for model in run.model_versions.order_by("kind"):
            m = model.metrics
            self.stdout.write(
                f"  {model.kind} #{model.pk} active: AUROC {_f(m.get('auroc'))}, "
                f"TPR {_f(m.get('tpr_at_threshold'))} at FPR {_f(m.get('fpr_at_threshold'))}"
                f" (test), held-out TPR {_f(m.get('heldout_tpr_at_threshold'))}"
            )
        self.stdout.write(f"  trained in {time.monotonic() - started:.0f} s")


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"
