"""The live guard's records: per-constitution policy, API tokens, conversations."""

from __future__ import annotations

import hashlib
import os
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


class GuardMode(models.TextChoices):
    ENFORCE = "enforce", "Enforce (block and halt)"
    SHADOW = "shadow", "Shadow (score and flag, never block)"
    OFF = "off", "Off"


class Upstream(models.Model):
    """An OpenAI-compatible model the guard proxies to (vLLM, Ollama, llama.cpp's
    server, TGI, a hosted API). Operators (staff) register them; a constitution's
    policy attaches them, and clients pick one by the model name `SLUG/NAME`."""

    name = models.SlugField(
        max_length=64, unique=True,
        help_text="Letters, digits, - and _; clients ask for the model CONSTITUTION/NAME.",
    )  # fmt: skip
    base_url = models.URLField(max_length=500, help_text="e.g. http://127.0.0.1:8001/v1")
    model = models.CharField(max_length=200, help_text="The upstream's own model name.")
    # The key: read from this environment variable of the server when set (nothing
    # stored), else the stored one, which is never shown again after it is saved.
    api_key_env = models.CharField(max_length=100, blank=True)
    api_key = models.CharField(max_length=500, blank=True)
    timeout_s = models.FloatField(
        default=30.0,
        help_text="Seconds to connect, to the first byte, and between two chunks.",
    )  # fmt: skip
    max_concurrency = models.PositiveIntegerField(
        default=8, help_text="Requests this server sends to the upstream at once; more wait."
    )
    max_tokens = models.PositiveIntegerField(
        default=1024, help_text="The most new tokens one request may ask the upstream for."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.model} at {self.base_url})"

    def resolved_api_key(self) -> str:
        if self.api_key_env:
            return os.environ.get(self.api_key_env, "")
        return self.api_key

    @property
    def key_source(self) -> str:
        """How the key is found, for pages and lists (never the key itself)."""
        if self.api_key_env:
            state = "set" if os.environ.get(self.api_key_env) else "not set on this server"
            return f"${self.api_key_env} ({state})"
        return "stored" if self.api_key else "none"


class FailureMode(models.TextChoices):
    CLOSED = "closed", "Fail closed (refuse when the guard cannot decide in time)"
    OPEN = "open", "Fail open (forward unguarded when the guard cannot decide in time)"


class GuardPolicy(models.Model):
    """How the guard runs for one constitution."""

    constitution = models.OneToOneField(
        "constitutions.Constitution", on_delete=models.CASCADE, related_name="guard_policy"
    )
    mode = models.CharField(max_length=10, choices=GuardMode.choices, default=GuardMode.ENFORCE)
    # A candidate model scored beside the active one on live traffic, never enforcing.
    shadow_input_model = models.ForeignKey(
        "classifiers.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    shadow_output_model = models.ForeignKey(
        "classifiers.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    # The probe cascade in use (None: the output model alone). Served only while its
    # probe is still the active output model, so activating another one turns it off.
    cascade = models.ForeignKey(
        "classifiers.CascadeCalibration", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip
    # Upstream models clients may reach through this constitution's guard.
    upstreams = models.ManyToManyField(Upstream, blank=True, related_name="policies")
    failure_mode = models.CharField(
        max_length=10, choices=FailureMode.choices, default=FailureMode.CLOSED
    )
    guard_timeout_s = models.FloatField(
        default=10.0,
        help_text="Seconds the classifiers may take to decide on a prompt or a reply "
        "chunk before the failure mode applies.",
    )  # fmt: skip
    max_message_chars = models.PositiveIntegerField(default=4000)
    # The whole prompt (every message, the chat template included), in the local
    # generator's tokens: bounds the prefill one request may cost (#26 item 2).
    max_prompt_tokens = models.PositiveIntegerField(default=2048)
    max_new_tokens = models.PositiveIntegerField(default=128)
    requests_per_minute = models.PositiveIntegerField(default=30)

    def __str__(self) -> str:
        return f"guard policy of {self.constitution.slug}: {self.mode}"

    @classmethod
    def for_constitution(cls, constitution: object) -> GuardPolicy:
        # Unsaved defaults when none is stored: reading a policy never writes (a
        # refused form or a malformed playground message must change nothing).
        return cls.objects.filter(constitution=constitution).first() or cls(
            constitution=constitution
        )


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A per-user API token; only its SHA-256 is stored (the raw one is shown once)."""

    PREFIX = "gw_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_prefix = models.CharField(max_length=16)  # shown in lists to tell tokens apart
    key_hash = models.CharField(max_length=64, unique=True)
    constitution = models.ForeignKey(
        "constitutions.Constitution", null=True, blank=True, on_delete=models.CASCADE,
        help_text="Default constitution for requests that name none.",
    )  # fmt: skip
    # Blank = the constitution's mode; else this token's own (e.g. shadow for a trial).
    mode = models.CharField(max_length=10, choices=GuardMode.choices, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    @classmethod
    def issue(cls, *, user: object, name: str, **fields: object) -> tuple[ApiToken, str]:
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, key_prefix=raw[:10], key_hash=hash_token(raw), **fields
        )
        return token, raw

    @classmethod
    def authenticate(cls, raw: str) -> ApiToken | None:
        if not raw.startswith(cls.PREFIX):
            return None
        token = (
            cls.objects.select_related("user", "constitution")
            .filter(key_hash=hash_token(raw), revoked_at__isnull=True)
            .first()
        )
        if token is not None and token.user.is_active:
            return token
        return None

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Conversation(models.Model):
    class Source(models.TextChoices):
        PLAYGROUND = "playground", "Playground"
        API = "api", "API"

    class FlagReason(models.TextChoices):
        INPUT_BLOCKED = "input_blocked", "Input blocked"
        OUTPUT_HALTED = "output_halted", "Output halted"
        NEAR_THRESHOLD = "near_threshold", "Near threshold"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    constitution = models.ForeignKey(
        "constitutions.Constitution", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="conversations",
    )  # fmt: skip
    source = models.CharField(max_length=20, choices=Source.choices)
    api_token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL)
    mode = models.CharField(max_length=10, choices=GuardMode.choices)
    input_model = models.ForeignKey(
        "classifiers.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    output_model = models.ForeignKey(
        "classifiers.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The upstream model that wrote the replies (blank: the embedded model); the
    # name stays when the upstream is deleted.
    upstream = models.ForeignKey(
        Upstream, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    upstream_name = models.CharField(max_length=64, blank=True)
    flagged = models.BooleanField(default=False, db_index=True)
    flag_reason = models.CharField(max_length=20, choices=FlagReason.choices, blank=True)
    max_score = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"conversation #{self.pk} ({self.source})"

    def messages_for_model(self) -> list[dict[str, str]]:
        """The conversation so far as chat messages (guarded replies as delivered)."""
        messages: list[dict[str, str]] = []
        for turn in self.turns.filter(variant=Turn.Variant.GUARDED).order_by("index"):
            messages.append({"role": "user", "content": turn.user_content})
            if turn.reply:
                messages.append({"role": "assistant", "content": turn.reply})
        return messages


class Turn(models.Model):
    """One user message and the reply to it, with the guard's scores and decisions."""

    class Variant(models.TextChoices):
        GUARDED = "guarded", "Guarded"
        UNGUARDED = "unguarded", "Unguarded"  # side-by-side comparison only

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveIntegerField()
    variant = models.CharField(max_length=10, choices=Variant.choices, default=Variant.GUARDED)
    user_content = models.TextField()
    reply = models.TextField(blank=True)  # as delivered (refusal appended if halted)
    generated = models.TextField(blank=True)  # what the model produced
    input_score = models.FloatField(null=True, blank=True)
    input_category = models.CharField(max_length=200, blank=True)
    input_threshold = models.FloatField(null=True, blank=True)
    output_threshold = models.FloatField(null=True, blank=True)
    token_scores = models.JSONField(default=list, blank=True)  # [[text, score], ...]
    finish_reason = models.CharField(max_length=20, blank=True)
    halted_at = models.IntegerField(null=True, blank=True)
    # The probe cascade scored this reply; escalated_at: where the heavy one joined.
    cascaded = models.BooleanField(default=False)
    escalated_at = models.IntegerField(null=True, blank=True)
    would_block = models.BooleanField(default=False)
    flag_reason = models.CharField(max_length=20, blank=True)
    shadow = models.JSONField(default=dict, blank=True)  # the shadow model's decisions
    latency_ms = models.FloatField(null=True, blank=True)
    first_token_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["conversation", "index", "variant"]
