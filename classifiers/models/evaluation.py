"""Evaluation sets: labelled prompts from outside the product, kept to judge guards.

An `EvaluationSet` is a named file of prompts a user brought (text, label 1 harmful /
0 benign, kind), stored once and scored against any input model. Each scoring is an
`EvaluationRun` job; its per-kind report (classifiers.ml.eval.labelled_sets) is kept
on the run and in the model's report under the set's name, so the set's page can
compare every model scored on it. Sets are never training data: nothing in a
dataset reads them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from classifiers.models.jobs import Job


class EvaluationSet(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=500, blank=True)
    # Counts of the import: prompts, harmful, benign, per kind, duplicates dropped.
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
        return reverse("classifiers:evaluation_set", args=[self.pk])


class EvaluationPrompt(models.Model):
    evaluation_set = models.ForeignKey(
        EvaluationSet, on_delete=models.CASCADE, related_name="prompts"
    )
    position = models.PositiveIntegerField()  # the line's order in the file
    text = models.TextField()
    label = models.PositiveSmallIntegerField()  # 1 harmful, 0 benign
    kind = models.CharField(max_length=64)

    class Meta:
        ordering = ["position"]
        indexes = [models.Index(fields=["evaluation_set", "position"])]


class EvaluationRun(Job):
    """One model scored on one evaluation set, on the worker (gpu queue)."""

    job_kind = "evaluation"

    evaluation_set = models.ForeignKey(
        EvaluationSet, on_delete=models.CASCADE, related_name="runs"
    )
    model_version = models.ForeignKey(
        "classifiers.ModelVersion", on_delete=models.CASCADE, related_name="evaluation_runs"
    )
    # The whole guard: with an output model, every prompt the input classifier
    # passes gets a reply from the local model (at most max_new_tokens), scored
    # token by token; a prompt counts as refused when either classifier stops it.
    output_model = models.ForeignKey(
        "classifiers.ModelVersion", null=True, blank=True, on_delete=models.CASCADE,
        related_name="+",
    )  # fmt: skip
    max_new_tokens = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=dict, blank=True)  # kind_report's result

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"evaluation #{self.pk}: model #{self.model_version_id} on {self.evaluation_set}"

    @property
    def whole_guard(self) -> bool:
        return self.output_model_id is not None

    @property
    def report_name(self) -> str:
        """The name its result is kept under in the model's report."""
        return f"{self.evaluation_set.name} · whole guard" if self.whole_guard else self.evaluation_set.name

    def get_absolute_url(self) -> str:
        return reverse("classifiers:evaluation_set", args=[self.evaluation_set_id])
