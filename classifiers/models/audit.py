"""Label audits: a person checks the generated labels a cross-validated model doubts.

A `LabelAudit` is a job over one dataset: it scores every source query out of fold
(classifiers.ml.eval.label_audit) and stores one `LabelAuditItem` per suspect, plus a
random spot check of non-suspects. Reviewers keep, flip or drop each item; applying
the audit writes a NEW dataset with those decisions, so models trained on the
original keep pointing at the data they saw.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from classifiers.models.jobs import Job

# The limits of an audit's settings (the start form and the service check both).
DEFAULT_SPOT_CHECK = 20  # random non-suspects queued too: estimates what was missed
MAX_SPOT_CHECK = 200
# Splits whose every generated source can be queued for people to label: the
# evaluation split (gold labels for the reported numbers) and the calibration split
# (its benign examples set the thresholds).
REVIEWABLE_SPLITS = ("test", "calibration", "validation", "train")


class LabelAudit(Job):
    job_kind = "audit"

    dataset = models.ForeignKey(
        "classifiers.Dataset", on_delete=models.CASCADE, related_name="audits"
    )
    config = models.JSONField(default=dict)  # folds, epochs, seed, spot_check
    summary = models.JSONField(default=dict, blank=True)  # counts, thresholds
    # The dataset written with the decisions applied (None until applied).
    applied_dataset = models.OneToOneField(
        "classifiers.Dataset", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="audited_from",
    )  # fmt: skip
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"label audit #{self.pk} of dataset #{self.dataset_id}"

    def get_absolute_url(self) -> str:
        return reverse("classifiers:label_audit", args=[self.pk])


class AuditDecision(models.TextChoices):
    # Keyboard shortcuts 1 / 2 / 3 follow this order.
    KEEP = "keep", "Label is right"
    FLIP = "flip", "Flip the label"
    DROP = "drop", "Drop (not a usable user message)"


class LabelAuditItem(models.Model):
    audit = models.ForeignKey(LabelAudit, on_delete=models.CASCADE, related_name="items")
    source_id = models.CharField(max_length=200)
    text = models.TextField()  # the source's original prompt text
    label = models.PositiveSmallIntegerField()  # as generated: 1 harmful, 0 benign
    category = models.CharField(max_length=200)
    harm_score = models.FloatField()  # out-of-fold P(harmful)
    suspect = models.BooleanField()  # the out-of-fold model disagrees with the label
    # Why it is queued: "suspect", "split" (every source of a split chosen for a
    # full review) or "spot_check" (a random non-suspect). Non-suspects of both
    # kinds are random samples of the sources the model agrees with.
    reason = models.CharField(max_length=12, default="suspect")
    suggested_category = models.CharField(max_length=200)  # of the other kind
    rank = models.PositiveIntegerField()  # queue order
    # The source's sentence embedding (float16 bytes), kept so the queue can learn
    # from reviewers' decisions without loading the encoder in the web process.
    embedding = models.BinaryField(null=True, blank=True, editable=False)
    # P(the generated label is wrong) from a model of the decisions so far (None
    # until someone asks for that order).
    wrong_score = models.FloatField(null=True, blank=True)
    decision = models.CharField(max_length=10, choices=AuditDecision.choices, blank=True)
    new_category = models.CharField(max_length=200, blank=True)  # for a flip
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["rank"]
        constraints = [
            models.UniqueConstraint(fields=["audit", "source_id"], name="one_item_per_source")
        ]

    def __str__(self) -> str:
        return f"{self.source_id} ({self.decision or 'undecided'})"
