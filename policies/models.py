"""Snapshot policies: the YAML a project applied, and the parsed spec the scheduler reads."""

from __future__ import annotations

import uuid
from datetime import time

from django.db import models
from django.utils import timezone

from clouddigit.compute.models import Project
from policies.spec import PolicySpec, Slot


class PolicyQuerySet(models.QuerySet):
    def visible_to(self, user) -> PolicyQuerySet:
        return self.filter(
            project__in=Project.objects.visible_to(user, "compute.view_snapshots").values("pk")
        )


class Policy(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="snapshot_policies")
    name = models.CharField(max_length=63)
    spec = models.JSONField(help_text="The parsed policy (policies.spec.PolicySpec)")
    source = models.TextField(help_text="The YAML as last applied")
    applied_by = models.CharField(max_length=150)
    scanned_until = models.DateTimeField(
        null=True, blank=True, help_text="The scheduler has claimed every slot due up to here"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["project", "name"]
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="policy_name_unique_in_project")
        ]

    def __str__(self) -> str:
        return f"{self.project}/{self.name}"

    @staticmethod
    def spec_to_json(spec: PolicySpec) -> dict:
        def slot(value: Slot | None) -> dict | None:
            return (
                None
                if value is None
                else {"at": value.at.strftime("%H:%M"), "zone": value.zone, "weekday": value.weekday}
            )

        return {
            "name": spec.name,
            "daily": slot(spec.daily),
            "weekly": slot(spec.weekly),
            "keep_daily": spec.keep_daily,
            "keep_weekly": spec.keep_weekly,
            "vm_tags": [list(tag) for tag in spec.vm_tags],
            "application_consistent": spec.application_consistent,
            "notify_channel": spec.notify_channel,
            "when_stopped": spec.when_stopped,
        }

    @property
    def parsed(self) -> PolicySpec:
        def slot(value: dict | None) -> Slot | None:
            if value is None:
                return None
            hour, minute = (int(part) for part in value["at"].split(":"))
            return Slot(time(hour, minute), value["zone"], value["weekday"])

        data = self.spec
        return PolicySpec(
            name=data["name"],
            daily=slot(data["daily"]),
            weekly=slot(data["weekly"]),
            keep_daily=data["keep_daily"],
            keep_weekly=data["keep_weekly"],
            vm_tags=tuple(tuple(tag) for tag in data["vm_tags"]),
            application_consistent=data["application_consistent"],
            notify_channel=data["notify_channel"],
            when_stopped=data["when_stopped"],
        )


class SlotRun(models.Model):
    """What happened for one policy, VM and slot. The unique constraint is what guarantees at most one
    snapshot per slot, whatever the number of beats, workers or retries."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        CREATED = "created", "Created"
        SKIPPED = "skipped", "Skipped"
        THROTTLED = "throttled", "Throttled"
        FAILED = "failed", "Failed"
        MISSED = "missed", "Missed"

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="runs")
    vm = models.ForeignKey("compute.VM", on_delete=models.CASCADE, related_name="policy_runs")
    slot_at = models.DateTimeField(help_text="The slot, in UTC")
    klass = models.CharField("class", max_length=8, help_text="daily or weekly")
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.PENDING)
    reason = models.CharField(max_length=300, blank=True)
    snapshot = models.ForeignKey(
        "snapshots.Snapshot", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    claim = models.UUIDField(help_text="The tick that inserted the row; only it runs the slot")
    retired = models.BooleanField(default=False, help_text="Its snapshot was deleted by retention")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-slot_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["policy", "vm", "slot_at", "klass"], name="one_run_per_policy_vm_slot"
            )
        ]

    def __str__(self) -> str:
        return f"{self.policy} {self.vm_id} {self.slot_at:%Y-%m-%d %H:%M} {self.klass}: {self.outcome}"
