"""Synthetic training datasets built from a published constitution version."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.urls import reverse
from django.utils import timezone

from classifiers.models.jobs import Job


class GeneratorEndpoint(models.Model):
    """An OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, Ollama, TGI)."""

    name = models.CharField(max_length=100, unique=True)
    base_url = models.URLField(help_text="e.g. http://127.0.0.1:8001/v1")
    model = models.CharField(max_length=200)
    api_key = models.CharField(max_length=500, blank=True)
    timeout_seconds = models.FloatField(default=60)
    max_retries = models.PositiveSmallIntegerField(default=3)
    concurrency = models.PositiveSmallIntegerField(default=4)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} ({self.model} at {self.base_url})"


class Dataset(Job):
    """A versioned synthetic dataset; also the record of the run that builds it."""

    job_kind = "dataset"

    constitution_version = models.ForeignKey(
        "constitutions.ConstitutionVersion", on_delete=models.PROTECT, related_name="datasets"
    )
    # "local" = the embedded SmolLM2, else the endpoint's description.
    generator = models.CharField(max_length=300, default="local")
    endpoint = models.ForeignKey(
        GeneratorEndpoint, null=True, blank=True, on_delete=models.SET_NULL
    )
    seed = models.IntegerField(default=0)
    config = models.JSONField(default=dict)  # GenerateConfig as a dict
    counts = models.JSONField(default=dict, blank=True)
    feedback_included = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"dataset #{self.pk} of {self.constitution_version}"

    def get_absolute_url(self) -> str:
        return reverse("classifiers:dataset", args=[self.pk])

    @property
    def transforms(self) -> list[str]:
        return list(self.config.get("transforms", []))


class DatasetExample(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="examples")
    messages = models.JSONField()
    prompt_text = models.TextField()
    response = models.TextField(blank=True)
    label = models.PositiveSmallIntegerField()  # 1 harmful, 0 benign
    category = models.CharField(max_length=200)
    source_id = models.CharField(max_length=200)
    transform = models.CharField(max_length=300, default="original")
    split = models.CharField(max_length=30)
    meta = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["dataset", "split"]),
            models.Index(fields=["dataset", "category"]),
            models.Index(fields=["dataset", "label"]),
            models.Index(fields=["dataset", "transform"]),
        ]

    def to_example(self) -> Any:
        from classifiers.ml.types import Example

        return Example(
            messages=list(self.messages),
            response=self.response,
            label=self.label,
            category=self.category,
            source_id=self.source_id,
            transform=self.transform,
            meta={**self.meta, "split": self.split},
        )


class JailbreakTemplate(models.Model):
    """A jailbreak wrapper template (seed or written by automated red teaming)."""

    text = models.TextField()
    normalized_hash = models.CharField(max_length=64, unique=True)
    source = models.CharField(max_length=20, default="generated")  # seed | generated
    dataset = models.ForeignKey(
        Dataset, null=True, blank=True, on_delete=models.SET_NULL, related_name="templates"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.text[:80]
