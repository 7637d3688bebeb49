from __future__ import annotations

from django.contrib import admin

from clouddigit.audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: the audit log cannot be edited or deleted through any interface."""

    list_display = ["at", "actor_name", "action", "outcome", "target_name", "account", "source_ip"]
    list_filter = ["outcome", "action"]
    search_fields = ["actor_name", "action", "target_name", "message"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
