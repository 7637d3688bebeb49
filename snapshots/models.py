"""Snapshots of volumes and VMs, their restores, size history and per-volume limits."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from clouddigit.compute.models import (
    VM,
    Layer,
    Project,
    ProjectScopedQuerySet,
    RaisedLimit,
    Region,
    TaggedQuerySet,
    Volume,
    validate_tags,
)
from clouddigit.compute.permissions import Perm
from clouddigit.errors import Conflict
from clouddigit.names import validate_name
from clouddigit.operations import Leased
from clouddigit.statemachine import StateMachineMixin

DEFAULT_SNAPSHOTS_PER_VOLUME = 100


class SnapshotQuerySet(TaggedQuerySet):
    view_perm = Perm.VIEW_SNAPSHOTS


class Snapshot(StateMachineMixin, Leased):
    class State(models.TextChoices):
        CREATING = "creating", "Creating"
        AVAILABLE = "available", "Available"
        DELETING = "deleting", "Deleting"
        ERROR = "error", "Error"

    TRANSITIONS = {
        State.CREATING: {State.AVAILABLE, State.ERROR},
        State.AVAILABLE: {State.DELETING},
        State.ERROR: {State.CREATING, State.DELETING},
        State.DELETING: {State.AVAILABLE, State.ERROR},
    }

    class Kind(models.TextChoices):
        VOLUME = "volume", "Volume snapshot"
        VM = "vm", "VM snapshot"

    class Origin(models.TextChoices):
        MANUAL = "manual", "Manual"
        POLICY = "policy", "Policy"
        SAFETY = "safety", "Safety (before a roll-back)"

    class Consistency(models.TextChoices):
        APPLICATION = "application", "Application-consistent"
        CRASH = "crash", "Crash-consistent"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="snapshots")
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="snapshots")
    name = models.CharField(max_length=100, validators=[validate_name])
    kind = models.CharField(max_length=8, choices=Kind.choices)
    vm = models.ForeignKey(VM, on_delete=models.SET_NULL, null=True, blank=True, related_name="snapshots")
    vm_name = models.CharField(max_length=63, blank=True, help_text="Kept when the VM is gone")
    vm_definition = models.JSONField(default=dict, blank=True, help_text="flavor, VPC, domain XML ...")
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.MANUAL)
    policy_name = models.CharField(max_length=100, blank=True)
    consistency_requested = models.CharField(max_length=12, choices=Consistency.choices)
    consistency_achieved = models.CharField(max_length=12, choices=Consistency.choices, blank=True)
    consistency_reason = models.CharField(max_length=300, blank=True)
    tags = models.JSONField(default=dict, blank=True, validators=[validate_tags])
    state = models.CharField(max_length=10, choices=State.choices, default=State.CREATING)
    step = models.CharField(max_length=200, blank=True, help_text="What the operation is doing now")
    step_started_at = models.DateTimeField(null=True, blank=True)
    stuck_reason = models.TextField(blank=True, help_text="Set by the sweeper past the deadline")
    last_error = models.TextField(blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Safety snapshots expire")
    hold = models.BooleanField(default=False, help_text="Pinned: never deleted by retention")
    rollback_of = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="safety_snapshots",
        help_text="For a safety snapshot: the snapshot the volumes were rolled back to",
    )
    source_snapshot = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="copies",
        help_text="For a cross-region copy: the snapshot it copies (None once that is deleted)",
    )
    source_region = models.ForeignKey(
        Region,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="For a cross-region copy: the region it was copied from",
    )
    bytes_total = models.PositiveBigIntegerField(default=0, help_text="A copy: guest data to send")
    bytes_done = models.PositiveBigIntegerField(default=0, help_text="A copy: data sent or already there")
    bytes_sent = models.PositiveBigIntegerField(default=0, help_text="A copy: data that crossed the link")
    billed_bytes = models.PositiveBigIntegerField(default=0)
    reclaimable_bytes = models.PositiveBigIntegerField(default=0)
    sizes_measured_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["project", "-created_at"])]

    def __str__(self) -> str:
        return self.name

    @property
    def bare_metal(self) -> bool:
        return bool(self.vm_definition.get("bare_metal"))

    @property
    def is_copy(self) -> bool:
        return self.source_region_id is not None


class SnapshotDisk(models.Model):
    """One volume captured by a snapshot (a volume snapshot has one; a VM snapshot one per volume)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="disks")
    volume = models.ForeignKey(Volume, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    volume_name = models.CharField(max_length=63)
    device = models.CharField(max_length=8, blank=True)
    bootable = models.BooleanField(default=False)
    size_bytes = models.PositiveBigIntegerField()
    layer = models.OneToOneField(Layer, on_delete=models.PROTECT, null=True, blank=True, related_name="disk")
    overlay_path = models.CharField(
        max_length=500, help_text="The volume's next active file (named up front)"
    )
    checksum = models.CharField(max_length=64, blank=True, help_text="Guest-visible SHA-256 at snapshot time")
    manifest_key = models.CharField(
        max_length=300, blank=True, help_text="A copy's disk: its manifest in the region's object store"
    )

    class Meta:
        ordering = ["device", "volume_name"]

    def __str__(self) -> str:
        return f"{self.snapshot} / {self.volume_name}"

    @property
    def existing_volume(self) -> Volume:
        """The volume, for work that changes it (taking the snapshot, rolling back to it)."""
        if self.volume is None:
            raise Conflict(f"Volume {self.volume_name} no longer exists; snapshot or restore another one.")
        return self.volume


class RestoreQuerySet(ProjectScopedQuerySet):
    """Restores are seen through their project, with the permission to see its snapshots."""

    view_perm = Perm.VIEW_SNAPSHOTS


class Restore(StateMachineMixin, Leased):
    class State(models.TextChoices):
        RESTORING = "restoring", "Restoring"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    TRANSITIONS = {State.RESTORING: {State.DONE, State.FAILED}, State.FAILED: {State.RESTORING}}

    class Kind(models.TextChoices):
        VOLUME = "volume", "New volume"
        VM = "vm", "New VM"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    snapshot = models.ForeignKey(Snapshot, on_delete=models.SET_NULL, null=True, related_name="restores")
    snapshot_name = models.CharField(max_length=100)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    name = models.CharField(max_length=63)
    volume = models.ForeignKey(Volume, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    vm = models.ForeignKey(VM, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    state = models.CharField(max_length=10, choices=State.choices, default=State.RESTORING)
    warnings = models.JSONField(default=list, blank=True)
    last_error = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True, help_text="Time to restore")
    updated_at = models.DateTimeField(auto_now=True)

    objects = RestoreQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"restore of {self.snapshot_name} to {self.name}"


class SizeSample(models.Model):
    """Billed size over time; the storage-growth charts read this history."""

    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="size_samples")
    at = models.DateTimeField(default=timezone.now)
    billed_bytes = models.PositiveBigIntegerField()
    reclaimable_bytes = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["snapshot", "at"]

    def __str__(self) -> str:
        return f"{self.snapshot_id} @ {self.at:%Y-%m-%d %H:%M}: {self.billed_bytes} B billed"


class SnapshotLimit(RaisedLimit):
    """A raised snapshots-per-volume limit for a project or one volume; the newest one applies."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    volume = models.ForeignKey(Volume, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    limit = models.PositiveIntegerField()

    class Meta(RaisedLimit.Meta):
        constraints = [
            models.CheckConstraint(
                condition=models.Q(project__isnull=False) | models.Q(volume__isnull=False),
                name="snapshotlimit_has_scope",
            )
        ]

    def __str__(self) -> str:
        return f"limit {self.limit} for {self.volume or self.project} (ticket {self.ticket})"


class Chunk(models.Model):
    """A content-addressed piece of copied guest data in one region's object store (key: its SHA-256).
    Its references are the `ChunkRef` rows of the copies that use it; one with none since
    `unreferenced_since` plus a grace period is deleted (`replication_work.collect`)."""

    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="+")
    sha256 = models.CharField(max_length=64)
    size = models.PositiveIntegerField()
    unreferenced_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["region", "sha256"], name="chunk_unique_per_region")]

    def __str__(self) -> str:
        return f"{self.region_id}/{self.sha256[:12]}"

    @property
    def key(self) -> str:
        return f"chunks/{self.sha256}"


class ChunkRef(models.Model):
    """A copy's disk uses a chunk (once, however often the chunk occurs in it)."""

    disk = models.ForeignKey(SnapshotDisk, on_delete=models.CASCADE, related_name="chunk_refs")
    chunk = models.ForeignKey(Chunk, on_delete=models.PROTECT, related_name="refs")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["disk", "chunk"], name="chunkref_unique")]

    def __str__(self) -> str:
        return f"{self.disk_id} -> {self.chunk}"


class CopyFailure(models.Model):
    """One failed attempt of a cross-region copy, kept after the copy is retried and lands, so
    `snap.replicate.failures_24h` counts it (snapshots/replication_metrics.py)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    source_region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="+")
    target_region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="+")
    copy = models.ForeignKey(
        Snapshot, on_delete=models.SET_NULL, null=True, blank=True, related_name="failures"
    )
    reason = models.TextField()
    failed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["project", "failed_at"])]

    def __str__(self) -> str:
        return f"{self.source_region_id}->{self.target_region_id} failed at {self.failed_at:%Y-%m-%d %H:%M}"


class InterRegionTransfer(models.Model):
    """Bytes a project's copies sent from one region to another in a month: metered, and charged as
    inter-region transfer (`CLOUDDIGIT_INTER_REGION_PRICE_PER_GIB`). Advanced by the copy worker in the
    transaction that advances the copy's `bytes_sent`."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    source_region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="+")
    target_region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="+")
    month = models.DateField(help_text="The first day of the month (UTC)")
    bytes_sent = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "source_region", "target_region", "month"],
                name="transfer_unique_per_month",
            )
        ]

    def __str__(self) -> str:
        return f"{self.project} {self.source_region_id}->{self.target_region_id} {self.month:%Y-%m}"
