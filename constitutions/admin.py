from django.contrib import admin

from constitutions.models import AuditEvent, Category, Constitution, ConstitutionVersion


class CategoryInline(admin.StackedInline):
    model = Category
    extra = 0


@admin.register(Constitution)
class ConstitutionAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "draft_revision", "updated_at")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [CategoryInline]


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ("name", "constitution", "kind", "position")
    list_filter = ("kind", "constitution")


@admin.register(ConstitutionVersion)
class ConstitutionVersionAdmin(admin.ModelAdmin):
    list_display = ("constitution", "number", "content_hash", "published_by", "published_at")

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # published versions are immutable


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("at", "constitution", "user", "action", "summary")
    list_filter = ("action",)
