"""Traffic pools: named sets of user prompts (benign unless labelled) that datasets
mix in as negatives for training and, above all, calibration. See
classifiers/ml/data/traffic.py for how an import is cleaned and split."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone


class TrafficPool(models.Model):
    class Source(models.TextChoices):
        IMPORTED = "imported", "Imported file"
        GENERATED = "generated", "Generated everyday requests"
        SHADOW = "shadow", "Shadow-mode traffic, labelled by review"

    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=500, blank=True)
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.IMPORTED)
    # Counts of the last import: read, kept, dropped (why), per split, label, kind.
    stats = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("classifiers:traffic_pool", args=[self.pk])


class TrafficPrompt(models.Model):
    pool = models.ForeignKey(TrafficPool, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField()
    label = models.PositiveSmallIntegerField(default=0)  # 0 benign, 1 harmful
    kind = models.CharField(max_length=64, blank=True)
    split = models.CharField(max_length=20)
    text_hash = models.CharField(max_length=64)  # sha256 of the normalised text
    # The generator's replies to this prompt, by the settings that made them
    # (datasets.traffic.reply_key): every dataset mixing the pool in with the same
    # settings reuses them instead of generating them again. "" = degenerate.
    replies = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pool", "text_hash"], name="unique_prompt_per_pool")
        ]
        indexes = [models.Index(fields=["pool", "split"])]
