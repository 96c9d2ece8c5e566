from __future__ import annotations

from django.contrib import admin

from constitutions.models import AuditEvent, Category, Constitution, ConstitutionVersion


class CategoryInline(admin.StackedInline):
    model = Category
    extra = 0
    readonly_fields = ("revision", "updated_by", "updated_at")


@admin.register(Constitution)
class ConstitutionAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "draft_revision", "updated_at")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("draft_revision", "created_by", "created_at")
    inlines = [CategoryInline]


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "constitution",
        "kind",
        "position",
        "revision",
        "updated_by",
    )
    list_filter = ("kind", "constitution")
    readonly_fields = ("revision", "updated_by", "updated_at")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable, never changed: versions are immutable, the audit trail append-only."""

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(ConstitutionVersion)
class ConstitutionVersionAdmin(ReadOnlyAdmin):
    list_display = (
        "constitution",
        "number",
        "content_hash",
        "published_by",
        "published_at",
    )


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "constitution", "user", "action", "summary")
    list_filter = ("action",)
