from __future__ import annotations

from django.contrib import admin

from iam.models import AccountMember, RoleBinding


@admin.register(RoleBinding)
class RoleBindingAdmin(admin.ModelAdmin):
    """Read-only here: grants and revokes go through the console or the API, so that guardian permissions
    follow and the audit log records them."""

    list_display = ["role", "user", "group", "account", "project", "granted_by", "created_at"]
    list_filter = ["role", "account"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AccountMember)
class AccountMemberAdmin(admin.ModelAdmin):
    """Read-only here: users join an account through a platform grant or `iam.services.add_member`, both
    audited."""

    list_display = ["account", "user", "group", "added_by", "created_at"]
    list_filter = ["account"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
