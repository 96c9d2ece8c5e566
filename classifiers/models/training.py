"""Training runs, immutable model artifacts, and which one is live."""

from __future__ import annotations

from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone

from classifiers.models.datasets import Dataset
from classifiers.models.jobs import Job


class ModelKind(models.TextChoices):
    INPUT = "input", "Input classifier"
    OUTPUT = "output", "Streaming output classifier"


class TrainingRun(Job):
    """Trains the input and the output classifier of one dataset, then calibrates and evaluates."""

    job_kind = "training"

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="training_runs")
    config = models.JSONField(default=dict)  # mode, epochs, seed, target_fpr, ...
    history = models.JSONField(default=dict, blank=True)  # {"input": [...], "output": [...]}
    activate_when_done = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"training run #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("classifiers:training", args=[self.pk])


class ModelVersion(models.Model):
    """One trained classifier: an immutable artifact folder under the data dir."""

    kind = models.CharField(max_length=10, choices=ModelKind.choices)
    constitution = models.ForeignKey(
        "constitutions.Constitution", on_delete=models.PROTECT, related_name="model_versions"
    )
    constitution_version = models.ForeignKey(
        "constitutions.ConstitutionVersion", on_delete=models.PROTECT, related_name="+"
    )
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="+")
    training_run = models.ForeignKey(
        TrainingRun, on_delete=models.PROTECT, related_name="model_versions"
    )
    path = models.CharField(max_length=500)  # artifact folder, relative to ARTIFACTS_DIR
    checksum = models.CharField(max_length=64)
    config = models.JSONField(default=dict)
    thresholds = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)  # headline numbers for lists
    report = models.JSONField(default=dict)  # the full evaluation report
    code_version = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.constitution.slug} {self.kind} #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("classifiers:model", args=[self.pk])

    @property
    def threshold(self) -> float | None:
        value = self.thresholds.get("global_threshold", self.thresholds.get("threshold"))
        return float(value) if value is not None else None

    def is_active(self) -> bool:
        return ActiveModel.objects.filter(model_version=self).exists()

    @transaction.atomic
    def activate(self, *, user: object = None) -> None:
        """Make this the live model of its kind for its constitution, atomically."""
        ActiveModel.objects.update_or_create(
            constitution=self.constitution,
            kind=self.kind,
            defaults={"model_version": self, "activated_at": timezone.now(),
                      "activated_by": user if getattr(user, "is_authenticated", False) else None},
        )


class ActiveModel(models.Model):
    """The live model per (constitution, kind); one row, switched in one UPDATE."""

    constitution = models.ForeignKey("constitutions.Constitution", on_delete=models.CASCADE)
    kind = models.CharField(max_length=10, choices=ModelKind.choices)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT)
    activated_at = models.DateTimeField(default=timezone.now)
    activated_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["constitution", "kind"], name="one_active_per_kind")
        ]


class CascadeCalibration(Job):
    """Calibrates a probe cascade: the active output model (the probe) escalating to
    a heavier output model of the same constitution. Its report holds the band,
    weight and threshold, and what the cascade scored and cost on held-out data;
    the guard serves it while the policy points at it and the probe is still the
    active output model."""

    job_kind = "cascade"

    constitution = models.ForeignKey("constitutions.Constitution", on_delete=models.CASCADE)
    probe_model = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    heavy_model = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    config = models.JSONField(default=dict)  # escalate_fraction, target_fpr
    settings = models.JSONField(default=dict, blank=True)  # band, weight, threshold
    report = models.JSONField(default=dict, blank=True)
    use_when_done = models.BooleanField(default=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"cascade calibration #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("classifiers:guard-settings", args=[self.constitution.slug])
