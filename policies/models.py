"""Snapshot policies: the YAML a project applied, and the parsed spec the scheduler reads."""

from __future__ import annotations

import uuid
from datetime import time

from django.db import models
from django.utils import timezone

from clouddigit.compute.models import Project, ProjectScopedQuerySet
from clouddigit.compute.permissions import Perm
from clouddigit.operations import Leased
from clouddigit.statemachine import StateMachineMixin
from policies.spec import CopyRule, PolicySpec, Slot


class PolicyQuerySet(ProjectScopedQuerySet):
    view_perm = Perm.VIEW_SNAPSHOTS


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
    retention_only = models.BooleanField(
        default=False, help_text="Deleted with 'keep applying retention': no new snapshots, old ones age out"
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
            "copy_to": [[rule.region, rule.keep_daily, rule.keep_weekly] for rule in spec.copy_to],
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
            copy_to=tuple(CopyRule(*rule) for rule in data.get("copy_to", [])),
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


class CopyRun(models.Model):
    """A policy snapshot's copy into one copy rule's region: made once (a copy that retention deleted or
    a user deleted is not made again), then kept or retired by the rule's own retention."""

    run = models.ForeignKey(SlotRun, on_delete=models.CASCADE, related_name="copy_runs")
    region = models.ForeignKey("compute.Region", on_delete=models.CASCADE, related_name="+")
    copy = models.ForeignKey(
        "snapshots.Snapshot", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=300, blank=True, help_text="Why no copy was made")
    retired = models.BooleanField(default=False, help_text="Its copy was deleted by the rule's retention")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "region"], name="one_copy_per_run_and_region")]

    def __str__(self) -> str:
        return f"{self.run} -> {self.region_id}"


class NotificationChannelQuerySet(ProjectScopedQuerySet):
    view_perm = Perm.VIEW_SNAPSHOTS


class NotificationChannel(models.Model):
    """Where a policy's `notify_channel` sends: a Slack-compatible webhook, or email addresses."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook (Slack-compatible JSON)"
        EMAIL = "email", "Email"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="notification_channels")
    name = models.CharField(max_length=63, help_text="What a policy's notify_channel says")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    target = models.CharField(
        max_length=500, help_text="The webhook's http(s) URL, or email addresses separated by commas"
    )
    # The server signs every webhook body with it (HMAC-SHA256), so it is kept as it is, not hashed; it is
    # shown once, when made, and never again. Email channels have none.
    secret = models.CharField(max_length=64, blank=True, editable=False)
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)

    objects = NotificationChannelQuerySet.as_manager()

    class Meta:
        ordering = ["project", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="channel_name_unique_in_project")
        ]

    def __str__(self) -> str:
        return f"{self.project}/{self.name}"

    @property
    def recipients(self) -> list[str]:
        return [address.strip() for address in self.target.split(",") if address.strip()]

    @property
    def shown_target(self) -> str:
        """The target as the console shows it: a webhook's path is usually its secret (Slack's is)."""
        if self.kind == self.Kind.EMAIL:
            return ", ".join(self.recipients)
        scheme, _, rest = self.target.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme}://{host}/…" if path else f"{scheme}://{host}{slash}"


class Notification(models.Model):
    """One message about one slot of one policy. The unique constraint makes it at most one: the tick
    that inserts the row sends, then records how it went; a tick that cannot insert sends nothing."""

    class Kind(models.TextChoices):
        RUNS = "runs", "Runs skipped or failed"
        RETENTION = "retention", "Retention error"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="notifications")
    slot_at = models.DateTimeField(help_text="The slot, in UTC")
    kind = models.CharField(max_length=9, choices=Kind.choices)
    channel = models.ForeignKey(
        NotificationChannel, on_delete=models.SET_NULL, null=True, blank=True, related_name="notifications"
    )
    channel_name = models.CharField(max_length=300, help_text="The policy's notify_channel when sent")
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True, help_text="When the send attempt ended")
    ok = models.BooleanField(null=True, help_text="Empty while sending, or if the sender died meanwhile")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["policy", "slot_at", "kind"], name="one_notification_per_policy_slot_kind"
            )
        ]

    def __str__(self) -> str:
        return f"{self.policy} {self.slot_at:%Y-%m-%d %H:%M} {self.kind}: {self.channel_name}"


class DrillQuerySet(ProjectScopedQuerySet):
    view_perm = Perm.VIEW_SNAPSHOTS


class Drill(StateMachineMixin, Leased):
    """A restore drill: the latest snapshot of a VM restored to a sandbox VM, smoke-checked, cleaned up."""

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"

    # A passed drill is final; a failed one runs again from a fresh restore (Retry).
    TRANSITIONS = {State.RUNNING: {State.PASSED, State.FAILED}, State.FAILED: {State.RUNNING}}

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    policy = models.ForeignKey(
        Policy, on_delete=models.SET_NULL, null=True, blank=True, related_name="drills"
    )
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    vm = models.ForeignKey("compute.VM", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    vm_name = models.CharField(max_length=63)
    snapshot = models.ForeignKey(
        "snapshots.Snapshot", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    snapshot_name = models.CharField(max_length=100)
    restore = models.ForeignKey(
        "snapshots.Restore",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The sandbox restore, so that a resumed drill goes on with it",
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.RUNNING)
    checks = models.JSONField(default=list, blank=True, help_text="[{check, ok, detail}]")
    seconds = models.FloatField(null=True, blank=True, help_text="Time to restore")
    error = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DrillQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"drill of {self.vm_name} from {self.snapshot_name}: {self.state}"
