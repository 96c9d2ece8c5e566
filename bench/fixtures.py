"""Placeholder queries and quickly trained classifiers, for the benchmarks and tests.

The classifier artifacts are trained once per process (no database needed: the
real MiniLM in fast mode for the input classifier, a probe on the real SmolLM2
for the output classifier) and saved under ARTIFACTS_DIR/test-<uuid>/, removed at
exit. `guard` points a published constitution version at them (dataset, training
run and model version rows) and activates them; `guarded_constitution` does that
for a throwaway two-category constitution of its own. The tests build their
constitutions with tests.factories and guard them here (tests/api_helpers.py);
this module must not import tests/ (bench is installed with the product).

`python -m bench` does not list it as a benchmark (bench/__main__.py HELPERS).
All text is innocuous placeholder content ("forbidden widgets" vs
garden soup).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

HARMFUL = [
    "how do I make the forbidden widget at home",
    "give me steps to assemble a forbidden widget",
    "where can I buy parts for the forbidden widget",
    "explain the forbidden widget recipe in detail",
    "I want to build the forbidden widget tonight",
    "list the forbidden widget components please",
    "what tools do I need for the forbidden widget",
    "teach me the secret forbidden widget method",
    "forbidden widget construction guide wanted",
    "help me finish my forbidden widget project",
    "which shop sells forbidden widget kits",
    "can you outline the forbidden widget procedure",
]
BENIGN = [
    "how do I cook a garden soup with leeks",
    "what is the best soil for roses",
    "when do I prune apple trees in my garden",
    "tips for growing basil on a windowsill",
    "how do I compost kitchen scraps",
    "which flowers attract bees to the garden",
    "how deep should I plant tulip bulbs",
    "what vegetables grow well in shade",
    "a simple garden soup recipe with carrots",
    "when is the right time to mow the lawn",
    "how can I grow strawberries in pots",
    "what is mulch and why use it",
]
HARMFUL_PROMPT = "how do I make the forbidden widget"
BENIGN_PROMPT = "how do I cook a garden soup"
CATEGORIES = ("forbidden widgets", "garden care")


@dataclass
class Artifact:
    path: str  # relative to ARTIFACTS_DIR
    checksum: str
    thresholds: dict[str, Any]
    config: dict[str, Any]


def _examples(
    queries: list[str], label: int, category: str, response: str
) -> list[Any]:
    from classifiers.ml.types import Example

    return [
        Example(
            messages=[{"role": "user", "content": q}],
            response=response,
            label=label,
            category=category,
            source_id=f"{category[:4]}-{i}",
        )  # fmt: skip
        for i, q in enumerate(queries)
    ]


def _root() -> Path:
    root = settings.ARTIFACTS_DIR / f"test-{uuid.uuid4().hex[:12]}"
    root.mkdir(parents=True)
    atexit.register(shutil.rmtree, root, True)
    return root


@functools.cache
def artifacts_root() -> Path:
    return _root()


@functools.cache
def input_artifact() -> Artifact:
    """The real MiniLM, frozen, with a trained head; calibrated at 10% FPR."""
    return train_input_artifact(f"{artifacts_root().name}/input")


def train_input_artifact(relative: str) -> Artifact:
    """Train and save an input classifier at ARTIFACTS_DIR/`relative` (seconds)."""
    from classifiers.ml.eval.calibrate import calibrate_thresholds
    from classifiers.ml.input.model import InputClassifierConfig
    from classifiers.ml.input.persistence import save_input_classifier
    from classifiers.ml.input.scoring import score_examples
    from classifiers.ml.input.training import train_input_classifier
    from classifiers.ml.registry import encoder_dir

    harmful = _examples(HARMFUL, 1, CATEGORIES[0], "")
    benign = _examples(BENIGN, 0, CATEGORIES[1], "")
    train = harmful[:8] + benign[:8]
    validation = harmful[8:] + benign[8:]
    cfg = InputClassifierConfig(
        backbone_dir=str(encoder_dir()), categories=list(CATEGORIES), epochs=8,
        batch_size=8, lr=3e-3,
    )  # fmt: skip
    trained = train_input_classifier(cfg, train, validation, device="cpu")
    # Calibrated on every example: the tiny set has too few benign ones otherwise.
    calibration = harmful + benign
    scores = score_examples(trained.model, trained.tokenizer, calibration)
    thresholds = calibrate_thresholds(
        [s.score for s in scores], [e.label for e in calibration],
        [e.category for e in calibration], target_fpr=0.1,
    )  # fmt: skip
    checksum = save_input_classifier(
        trained.model, cfg.backbone_dir, settings.ARTIFACTS_DIR / relative,
        thresholds=thresholds, metrics={}, code_version="test",
    )  # fmt: skip
    return Artifact(relative, checksum, thresholds.to_dict(), {"mode": "fast"})


@functools.cache
def _output_probe() -> Any:
    from classifiers.core.model_cache import shared_generator
    from classifiers.ml.output.model import OutputClassifierConfig
    from classifiers.ml.output.training import train_output_classifier

    lm, tokenizer = shared_generator()
    harmful = _examples(
        HARMFUL[:6],
        1,
        CATEGORIES[0],
        "Sure, the forbidden widget needs the secret part.",
    )
    benign = _examples(
        BENIGN[:6], 0, CATEGORIES[1], "Water the plants and keep the soil moist."
    )
    cfg = OutputClassifierConfig(backbone_dir=str(getattr(lm, "name_or_path", "")),
                                 mode="fast", epochs=2, batch_size=12, max_length=40)  # fmt: skip
    trained = train_output_classifier(
        cfg,
        harmful[:5] + benign[:5],
        harmful[5:] + benign[5:],
        lm=lm,
        tokenizer=tokenizer,
    )
    return trained.model, cfg


@functools.cache
def output_artifact(threshold: float | None) -> Artifact:
    """A probe on the real SmolLM2; `threshold` None never halts, 0.0 halts at once."""
    from classifiers.ml.eval.calibrate import Thresholds
    from classifiers.ml.output.persistence import save_output_classifier

    model, cfg = _output_probe()
    thresholds = Thresholds(
        global_threshold=float("inf") if threshold is None else threshold,
        target_fpr=0.1,
    ).to_dict()
    relative = f"{artifacts_root().name}/output-{uuid.uuid4().hex[:6]}"
    checksum = save_output_classifier(
        model, settings.ARTIFACTS_DIR / relative, thresholds=thresholds, metrics={},
        code_version="test", config=cfg,
    )  # fmt: skip
    return Artifact(relative, checksum, thresholds, {"mode": "fast"})


def placeholder_constitution(slug: str = "widgets", *, user: Any = None) -> Any:
    """A published constitution with the CATEGORIES pair; returns the version."""
    from constitutions.models import Category, Constitution, publish

    with transaction.atomic():
        constitution = Constitution.objects.create(
            slug=slug, name=f"{slug.title()} policy", domain="A gardening assistant."
        )
        Category.objects.create(
            constitution=constitution, position=0, name=CATEGORIES[0], kind="restricted",
            description="Requests to make or obtain the forbidden widget.",
            example_queries=[HARMFUL_PROMPT],
        )  # fmt: skip
        Category.objects.create(
            constitution=constitution, position=1, name=CATEGORIES[1], kind="permitted",
            description="Ordinary gardening and cooking questions.",
            example_queries=[BENIGN_PROMPT],
        )  # fmt: skip
        return publish(constitution, user=user)


def activate(version: Any, kind: str, artifact: Artifact) -> Any:
    """A ModelVersion row for `artifact` (with its dataset and run), made live."""
    from classifiers.models import Dataset, ModelVersion, TrainingRun

    dataset = Dataset.objects.create(
        constitution_version=version, status="done", finished_at=timezone.now()
    )
    run = TrainingRun.objects.create(
        dataset=dataset, status="done", finished_at=timezone.now()
    )
    model = ModelVersion.objects.create(
        kind=kind, constitution=version.constitution, constitution_version=version,
        dataset=dataset, training_run=run, path=artifact.path, checksum=artifact.checksum,
        config=artifact.config, thresholds=artifact.thresholds, code_version="test",
    )  # fmt: skip
    model.activate()
    return model


def guard(
    version: Any,
    *,
    output: bool = False,
    output_threshold: float | None = None,
    **policy: Any,
) -> Any:
    """Activate the input classifier (and the output one when asked) for a published
    `version` whose categories are CATEGORIES; `policy` sets GuardPolicy fields
    (mode, max_message_chars, ...). Returns the Constitution."""
    from classifiers.models import GuardPolicy

    activate(version, "input", input_artifact())
    if output:
        activate(version, "output", output_artifact(output_threshold))
    if policy:
        GuardPolicy.objects.update_or_create(
            constitution=version.constitution, defaults=policy
        )
    return version.constitution


def guarded_constitution(
    slug: str = "widgets",
    *,
    output: bool = False,
    output_threshold: float | None = None,
    user: Any = None,
    **policy: Any,
) -> Any:
    """A placeholder_constitution, guarded (see `guard`)."""
    return guard(
        placeholder_constitution(slug, user=user),
        output=output, output_threshold=output_threshold, **policy,
    )  # fmt: skip
