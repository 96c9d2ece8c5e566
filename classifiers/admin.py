"""The classifiers app in Django's admin (staff only): every table, for operators.

Records that the product writes and checks (datasets, runs, model versions, jobs,
conversations) are read-only here: editing them by hand would break the lineage and
checksums the pages rely on; the product's own pages start, cancel, activate and
roll back. Guard policies and jailbreak templates are editable. Secrets never show:
an API token is a hash and a prefix, and an endpoint's key is write-only (set it on
the endpoint page), shown here as "set" or "not set".
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from classifiers.models import (
    ActiveModel,
    ApiToken,
    CascadeCalibration,
    Conversation,
    Dataset,
    EvaluationRun,
    EvaluationSet,
    FeedbackExample,
    GeneratorEndpoint,
    GuardPolicy,
    JailbreakTemplate,
    LabelAudit,
    ModelVersion,
    ReviewItem,
    TrafficPool,
    TrainingRun,
    Turn,
    Upstream,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """View (and for some, delete) only: the product's pages make these rows."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    list_display = ("name", "user", "key_prefix", "constitution", "mode", "created_at",
                    "last_used_at")  # fmt: skip
    exclude = ("key_hash",)  # a hash, but nobody needs to read it
    search_fields = ("name", "key_prefix", "user__username")


@admin.register(GeneratorEndpoint)
class GeneratorEndpointAdmin(admin.ModelAdmin):
    list_display = ("name", "base_url", "model", "key", "timeout_seconds", "max_retries")
    exclude = ("api_key",)  # write-only: set or replace it on the endpoint page

    @admin.display(description="API key")
    def key(self, endpoint: GeneratorEndpoint) -> str:
        return "set" if endpoint.api_key else "not set"


@admin.register(Upstream)
class UpstreamAdmin(admin.ModelAdmin):
    list_display = ("name", "base_url", "model", "key", "timeout_s", "max_concurrency")
    exclude = ("api_key",)  # write-only: set or replace it on the Upstreams page

    @admin.display(description="API key")
    def key(self, upstream: Upstream) -> str:
        return upstream.key_source


@admin.register(GuardPolicy)
class GuardPolicyAdmin(admin.ModelAdmin):
    list_display = ("constitution", "mode", "failure_mode")


@admin.register(JailbreakTemplate)
class JailbreakTemplateAdmin(admin.ModelAdmin):
    list_display = ("pk", "source", "created_at")


@admin.register(Dataset)
class DatasetAdmin(ReadOnlyAdmin):
    list_display = ("pk", "constitution_version", "status", "generator", "created_at")
    list_filter = ("status",)


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = ("pk", "dataset", "status", "created_at")
    list_filter = ("status",)


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("pk", "constitution", "kind", "checksum", "created_at")
    list_filter = ("kind",)


@admin.register(ActiveModel)
class ActiveModelAdmin(ReadOnlyAdmin):
    list_display = ("constitution", "kind", "model_version", "activated_at")


@admin.register(CascadeCalibration, LabelAudit)
class JobAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "status", "stage", "done", "total", "created_at")
    list_filter = ("status",)


@admin.register(EvaluationRun)
class EvaluationRunAdmin(JobAdmin):
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # goes with its set (a score; the model keeps its own copy)


@admin.register(EvaluationSet, TrafficPool)
class PromptCollectionAdmin(ReadOnlyAdmin):
    list_display = ("name", "created_by", "created_at")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # a set or pool nobody needs any more; its prompts go with it


class TurnInline(admin.StackedInline):
    model = Turn
    extra = 0
    can_delete = False
    fields = ("index", "variant", "user_content", "reply", "input_score", "input_category",
              "finish_reason", "halted_at", "flag_reason")  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ("pk", "constitution", "source", "mode", "flagged", "flag_reason",
                    "created_at")  # fmt: skip
    list_filter = ("source", "mode", "flagged")
    inlines = [TurnInline]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # retention: a user's conversation can be erased (turns, review too)


@admin.register(ReviewItem)
class ReviewItemAdmin(ReadOnlyAdmin):
    list_display = ("pk", "conversation", "category", "status", "decision", "decided_by")
    list_filter = ("status", "decision")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # goes with its conversation (retention)


@admin.register(FeedbackExample)
class FeedbackExampleAdmin(ReadOnlyAdmin):
    list_display = ("pk", "constitution", "label", "category", "decision", "created_at")
