"""Human review of flagged conversations, and the feedback it turns into data.

A `ReviewItem` exists per flagged conversation. Every change to an item is a
conditional UPDATE that bumps `version` (optimistic locking), so two reviewers
never both claim one item and a decision based on a stale page is refused with a
conflict instead of silently overwriting another one.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone


class ReviewStatus(models.TextChoices):
    OPEN = "open", "Open"
    CLAIMED = "claimed", "Claimed"
    DECIDED = "decided", "Decided"


class Decision(models.TextChoices):
    # Keyboard shortcuts 1-4 follow this order.
    CORRECT_BLOCK = "correct_block", "Correct block"
    FALSE_POSITIVE = "false_positive", "False positive"
    MISSED_HARM = "missed_harm", "Missed harm"
    ESCALATE = "escalate", "Escalate"


class ReviewItem(models.Model):
    conversation = models.OneToOneField(
        "classifiers.Conversation", on_delete=models.CASCADE, related_name="review_item"
    )
    # Copied from the conversation's highest-scoring turn so the queue filters
    # and sorts with plain column lookups.
    category = models.CharField(max_length=200, blank=True, db_index=True)
    status = models.CharField(
        max_length=10, choices=ReviewStatus.choices, default=ReviewStatus.OPEN, db_index=True
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    decision = models.CharField(max_length=20, choices=Decision.choices, blank=True)
    note = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    decided_at = models.DateTimeField(null=True, blank=True, db_index=True)
    version = models.PositiveIntegerField(default=0)  # bumped by every change
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"review item #{self.pk} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("classifiers:review_item", args=[self.pk])


class FeedbackExample(models.Model):
    """A reviewed conversation turned into a training example for the next dataset."""

    constitution = models.ForeignKey(
        "constitutions.Constitution", on_delete=models.CASCADE, related_name="feedback_examples"
    )
    review_item = models.ForeignKey(
        ReviewItem, null=True, blank=True, on_delete=models.SET_NULL, related_name="feedback"
    )
    messages = models.JSONField()  # the prompt side, as chat messages
    prompt_text = models.TextField()
    response = models.TextField(blank=True)
    label = models.PositiveSmallIntegerField()  # 1 restricted (harmful), 0 permitted
    category = models.CharField(max_length=200)
    decision = models.CharField(max_length=20, choices=Decision.choices)
    active = models.BooleanField(default=True, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    removed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"feedback #{self.pk} ({'restricted' if self.label else 'permitted'})"
