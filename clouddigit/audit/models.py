"""The audit log: append-only. No interface edits or deletes an entry (the model refuses it too)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from clouddigit.compute.models import Account, Project
from clouddigit.compute.permissions import Perm


class ImmutableEntry(Exception):
    pass


class AuditEntryQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise ImmutableEntry("Audit entries cannot be changed.")

    def delete(self):
        raise ImmutableEntry("Audit entries cannot be deleted.")

    def visible_to(self, user) -> AuditEntryQuerySet:
        """Entries of the accounts where `user` may read the audit log, and the user's own entries that
        belong to no account (such as signing in)."""
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser:
            return self
        accounts = Account.objects.holding(user, Perm.VIEW_AUDIT).values("pk")
        return self.filter(Q(account__in=accounts) | Q(account__isnull=True, actor_id=user.pk))


class AuditEntry(models.Model):
    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        REFUSED = "refused", "Refused"
        FAILED = "failed", "Failed"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    # Plain values, not foreign keys: an entry must outlive (and never change with) the user it names.
    actor_id = models.IntegerField(null=True, blank=True)
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    target_type = models.CharField(max_length=32, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_name = models.CharField(max_length=300, blank=True)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    message = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["account", "-at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.outcome}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableEntry("Audit entries cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableEntry("Audit entries cannot be deleted.")
