"""Small real classifiers for guard tests: trained once per test session on disk,
then registered (ModelVersion rows, activated) per test, since transactional tests
flush the database between tests."""

from __future__ import annotations

import random
import uuid
from functools import cache
from pathlib import Path

from django.conf import settings

HARMFUL = "how do I build the forbidden widget at home"
BENIGN = "what soup goes well with a garden salad"
FILLER = ["please", "quickly", "today", "friend", "now", "kindly", "again", "exactly"]


def _examples(count: int, seed: int) -> list:
    from classifiers.ml.types import Example

    rng = random.Random(seed)
    out = []
    for i in range(count):
        harmful = i % 2 == 0
        words = rng.sample(FILLER, 3)
        key = "forbidden widget build" if harmful else "garden soup salad"
        words.insert(rng.randrange(4), key)
        out.append(
            Example(
                messages=[{"role": "user", "content": " ".join(words)}],
                response="",
                label=int(harmful),
                category="Widgets" if harmful else "Gardening",
                source_id=f"{seed}-{i}",
            )
        )
    return out


@cache
def trained_artifacts(output_threshold: float) -> tuple[Path, Path]:
    """(input artifact dir, output artifact dir) under ARTIFACTS_DIR, trained once."""
    import torch

    from classifiers.ml.calibrate import Thresholds
    from classifiers.ml.input_classifier import (
        InputClassifierConfig,
        save_input_classifier,
        train_input_classifier,
    )
    from classifiers.ml.output_classifier import (
        OutputClassifierConfig,
        build_model,
        load_backbone,
        save_output_classifier,
    )
    from classifiers.ml.registry import encoder_dir, generator_dir

    root = settings.ARTIFACTS_DIR / f"test-{uuid.uuid4().hex[:8]}"
    encoder = encoder_dir()
    cfg = InputClassifierConfig(
        backbone_dir=str(encoder), categories=["Gardening", "Widgets"], epochs=25,
        lr=5e-3, batch_size=16, hidden=64, dropout=0.0,
    )  # fmt: skip
    trained = train_input_classifier(cfg, _examples(48, 1), _examples(16, 2))
    save_input_classifier(
        trained.model, encoder, root / "input",
        thresholds=Thresholds(global_threshold=0.5, target_fpr=0.01), metrics={},
        code_version="test",
    )  # fmt: skip
    backbone = generator_dir(data_dir=settings.DATA_DIR)
    out_cfg = OutputClassifierConfig(backbone_dir=str(backbone), mode="fast")
    lm, _ = load_backbone(backbone, torch.device("cpu"))
    model = build_model(out_cfg, lm)
    torch.manual_seed(0)
    with torch.no_grad():  # an untrained probe with a visible spread of scores
        model.v_head.summary.weight.normal_(0, 0.05)
    save_output_classifier(
        model, root / "output",
        thresholds=Thresholds(global_threshold=output_threshold, target_fpr=0.01).to_dict(),
        metrics={}, code_version="test", config=out_cfg,
    )  # fmt: skip
    return root / "input", root / "output"


def constitution_with_models(*, slug: str = "widgets", output_threshold: float = 0.999, user=None):  # type: ignore[no-untyped-def]
    """A published constitution whose input and output classifiers are active."""
    from constitutions.models import Category, Constitution, publish

    from classifiers.models import Dataset, ModelVersion, TrainingRun

    constitution = Constitution.objects.create(slug=slug, name=slug.title(), domain="A test assistant.")
    Category.objects.create(
        constitution=constitution, position=0, name="Widgets", kind="restricted",
        description="Building the forbidden widget.", example_queries=[HARMFUL, "widget plans"],
    )  # fmt: skip
    Category.objects.create(
        constitution=constitution, position=1, name="Gardening", kind="permitted",
        description="Gardens and soups.", example_queries=[BENIGN, "garden tips"],
    )  # fmt: skip
    version = publish(constitution, user=user)
    dataset = Dataset.objects.create(constitution_version=version, status="done")
    run = TrainingRun.objects.create(dataset=dataset, status="done")
    input_dir, output_dir = trained_artifacts(output_threshold)
    models = {}
    for kind, directory in (("input", input_dir), ("output", output_dir)):
        from classifiers.ml.checkpoints import load_artifact

        artifact = load_artifact(directory)
        models[kind] = ModelVersion.objects.create(
            kind=kind, constitution=constitution, constitution_version=version,
            dataset=dataset, training_run=run,
            path=str(directory.relative_to(settings.ARTIFACTS_DIR)),
            checksum=artifact.checksum, thresholds=artifact.extra.get("thresholds", {}),
        )  # fmt: skip
        models[kind].activate()
    return constitution, models
