"""Role bindings: (user or group, role, project or whole account). Each becomes guardian object
permissions on the Project or Account; iam.services keeps the two in step."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q
from django.utils import timezone

from clouddigit.compute.models import Account, Project
from clouddigit.compute.permissions import Perm
from iam.roles import ROLE_CHOICES, ROLES


class AccountMember(models.Model):
    """A user or group of an account: the only principals its admins may grant roles to (sharing with
    another account's users is on the roadmap). The platform places them: a grant by the system or a
    superuser, or `iam.services.add_member`."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="account_memberships",
    )
    group = models.ForeignKey(
        Group, on_delete=models.CASCADE, null=True, blank=True, related_name="account_memberships"
    )
    added_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["account__slug"]
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True)
                | Q(user__isnull=True, group__isnull=False),
                name="accountmember_one_principal",
            ),
            models.UniqueConstraint(
                fields=["account", "user"], condition=Q(user__isnull=False), name="accountmember_user_unique"
            ),
            models.UniqueConstraint(
                fields=["account", "group"],
                condition=Q(group__isnull=False),
                name="accountmember_group_unique",
            ),
        ]

    def __str__(self) -> str:
        if self.user is not None:
            return f"user {self.user.get_username()} of account {self.account}"
        assert self.group is not None  # the check constraint: a user or a group
        return f"group {self.group.name} of account {self.account}"


class RoleBindingQuerySet(models.QuerySet):
    def visible_to(self, user) -> RoleBindingQuerySet:
        """Bindings of the accounts where `user` grants roles or audits, and the user's own."""
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser:
            return self
        managed = Account.objects.holding(user, Perm.MANAGE_ROLES).values("pk")
        audited = Account.objects.holding(user, Perm.VIEW_AUDIT).values("pk")
        return self.filter(
            Q(account__in=managed) | Q(account__in=audited) | Q(user=user) | Q(group__in=user.groups.all())
        )


class RoleBinding(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    role = models.CharField(max_length=32, choices=ROLE_CHOICES)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="role_bindings",
    )
    group = models.ForeignKey(
        Group, on_delete=models.CASCADE, null=True, blank=True, related_name="role_bindings"
    )
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="role_bindings")
    project = models.ForeignKey(
        Project,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="role_bindings",
        help_text="Empty: the whole account",
    )
    granted_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)

    objects = RoleBindingQuerySet.as_manager()

    class Meta:
        ordering = ["account__slug", "project__slug", "role"]
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True)
                | Q(user__isnull=True, group__isnull=False),
                name="rolebinding_one_principal",
            ),
            # NULLs are distinct in unique constraints, so each principal/scope combination gets its own.
            models.UniqueConstraint(
                fields=["role", "user", "project"],
                condition=Q(user__isnull=False, project__isnull=False),
                name="rolebinding_user_project_unique",
            ),
            models.UniqueConstraint(
                fields=["role", "user", "account"],
                condition=Q(user__isnull=False, project__isnull=True),
                name="rolebinding_user_account_unique",
            ),
            models.UniqueConstraint(
                fields=["role", "group", "project"],
                condition=Q(group__isnull=False, project__isnull=False),
                name="rolebinding_group_project_unique",
            ),
            models.UniqueConstraint(
                fields=["role", "group", "account"],
                condition=Q(group__isnull=False, project__isnull=True),
                name="rolebinding_group_account_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} for {self.principal_label} on {self.scope_label}"

    @property
    def principal(self):
        return self.user or self.group

    @property
    def principal_label(self) -> str:
        if self.user is not None:
            return f"user {self.user.get_username()}"
        assert self.group is not None  # the check constraint: a user or a group
        return f"group {self.group.name}"

    @property
    def scope(self):
        return self.project or self.account

    @property
    def scope_label(self) -> str:
        return f"project {self.project}" if self.project_id else f"account {self.account}"

    @property
    def role_summary(self) -> str:
        return ROLES[self.role].summary
