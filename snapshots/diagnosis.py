"""What is a snapshot operation waiting for? The spec's "Snapshot stuck in Creating" table, answered from
the row's recorded step, the volumes' states, the worker heartbeat and the region's free space."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from clouddigit.models import Heartbeat
from images import storage
from snapshots import replication_health
from snapshots.models import Restore, Snapshot

STUCK_AFTER = timedelta(minutes=5)
MIN_FREE_BYTES = 1 * 2**30


@dataclass(frozen=True)
class Finding:
    cause: str
    check: str
    fix: str
    detail: str = ""


FREEZE_HUNG = (
    "Application-consistent freeze hung",
    "The guest's qemu-guest-agent log (journalctl -u qemu-guest-agent inside the VM)",
    "Restart qemu-guest-agent; retry as crash-consistent if urgent",
)
DETACHING = ("Volume is detaching", "Volume state", "Wait for the detach to complete")
BACKEND_SLOW = (
    "Snapshot backend slow",
    "Console → Platform → Backend status",
    "Wait, or open a ticket if sustained",
)
TASK_LOST = (
    "The task was lost (its worker died or its message was never picked up)",
    "Worker logs: was a worker killed or restarted?",
    "Nothing: the reconciler queues it again within a minute; Retry to queue it now",
)
QUOTA = (
    "Storage quota hit",
    "Project storage quota and the region's free space",
    "Free space, request a bump",
)


def _elapsed(snapshot: Snapshot) -> timedelta:
    return timezone.now() - (snapshot.step_started_at or snapshot.created_at)


def diagnose(snapshot: Snapshot) -> list[Finding]:
    """The current waiting reasons of a snapshot operation, most likely first; empty when nothing waits."""
    if snapshot.state not in {Snapshot.State.CREATING, Snapshot.State.DELETING, Snapshot.State.ERROR}:
        return []
    findings = []
    waited = _elapsed(snapshot)
    minutes = f"{waited.total_seconds() / 60:.1f} min"
    if snapshot.is_copy:
        findings += _copy_findings(snapshot)
    elif snapshot.state == Snapshot.State.ERROR:
        findings.append(
            Finding(
                "The operation failed", "The error below", "Fix its cause, then Retry", snapshot.last_error
            )
        )
    if (
        snapshot.step.startswith("freezing")
        and waited.total_seconds() > settings.HYPERVISOR_FREEZE_TIMEOUT_SECONDS
    ):
        findings.append(Finding(*FREEZE_HUNG, f"the freeze was asked {minutes} ago and has not returned"))
    detaching = [
        disk.volume.name
        for disk in snapshot.disks.select_related("volume")
        if disk.volume and disk.volume.state == "detaching"
    ]
    if detaching:
        findings.append(Finding(*DETACHING, f"volume {', '.join(detaching)} is detaching"))
    lost = snapshot.state != Snapshot.State.ERROR and snapshot.lease_expired
    if lost:
        holder = f"worker {snapshot.claimed_by}" if snapshot.claimed_by else "the queue"
        findings.append(
            Finding(
                *TASK_LOST,
                f"{holder} stopped answering for it at {snapshot.lease_until:%H:%M:%S} UTC "
                f"(attempt {snapshot.attempts}); step: {snapshot.step or 'none'}",
            )
        )
    elif snapshot.step.startswith("queued"):
        beat = Heartbeat.objects.filter(name="worker").first()
        alive = beat and timezone.now() - beat.last_seen < timedelta(seconds=90)
        detail = f"queued {minutes} ago; " + (
            "workers are alive but busy" if alive else "no worker has reported for over 90 s"
        )
        findings.append(Finding(*BACKEND_SLOW, detail))
    free = (
        shutil.disk_usage(snapshot.region.volume_dir).free if os.path.isdir(snapshot.region.volume_dir) else 0
    )
    if free < MIN_FREE_BYTES:
        findings.append(Finding(*QUOTA, f"{free / 2**30:.1f} GiB free in {snapshot.region} volume storage"))
    findings += _storage_quota(snapshot)
    if not findings and waited > STUCK_AFTER:
        findings.append(Finding(*BACKEND_SLOW, f"step '{snapshot.step}' has taken {minutes}"))
    return findings


SOURCE_NOT_AVAILABLE = (
    "The source snapshot is not Available (a copy reads it only then)",
    "The source snapshot's page: its state and the operation on it",
    "Wait for that operation to finish, then Retry the copy; a deleted source cannot be copied: delete "
    "this copy",
)
TARGET_NOT_ANSWERING = (
    "The target region's object store does not answer",
    "Snapshots → Replication, Network → Inter-region: link status and latency",
    "Wait for the link to come back, then Retry the copy; open a ticket if it is sustained",
)
COPY_KEEPS_FAILING = (
    "This copy keeps failing",
    "Its failures below (and `snapshot diagnose`)",
    "It is set aside as Error so the other copies go on; fix the cause named, then `snapshot retry` takes "
    "it up again, or delete it",
)


def _copy_findings(copy: Snapshot) -> list[Finding]:
    """The spec's "Cross-region copy stalled" causes, checked now: the source snapshot, the target
    region's object store, and the copy's own failures (`CopyFailure`)."""
    findings = []
    source = copy.source_snapshot
    if source is None:
        findings.append(Finding(*SOURCE_NOT_AVAILABLE, "the source snapshot has been deleted"))
    elif source.state != Snapshot.State.AVAILABLE:
        holder = f"worker {source.claimed_by}" if source.worker_on_it else "no worker now"
        doing = source.step or source.last_error or "no step recorded"
        findings.append(
            Finding(
                *SOURCE_NOT_AVAILABLE, f"{source.name} is {source.get_state_display()}: {doing} ({holder})"
            )
        )
    target = replication_health.check_store(copy.region)
    if not target.answers:
        findings.append(
            Finding(
                *TARGET_NOT_ANSWERING,
                f"{copy.region_id} did not answer in {target.latency_ms} ms: {target.detail}",
            )
        )
    if copy.state == Snapshot.State.ERROR:
        failures = list(copy.failures.order_by("-failed_at").values_list("reason", flat=True)[:100])
        count = len(failures) or 1
        cause = COPY_KEEPS_FAILING if count > 1 else ("The copy failed", *COPY_KEEPS_FAILING[1:])
        findings.append(Finding(*cause, f"{count} failed attempts; last: {copy.last_error}"))
    return findings


def _storage_quota(snapshot: Snapshot) -> list[Finding]:
    """The project's storage quota (images.storage), which a full project's new snapshots are refused by."""
    used = storage.usage(snapshot.project)
    return [Finding(*QUOTA, str(used))] if used.full else []


def sweep() -> None:
    """Mark operations stuck past the deadline with their reason, so they show without anyone asking;
    delete expired safety snapshots."""
    # A cycle: services queue tasks, and the tasks module runs this sweep.
    from snapshots import services

    deadline = timezone.now() - STUCK_AFTER
    stuck = Snapshot.objects.filter(
        state__in=[Snapshot.State.CREATING, Snapshot.State.DELETING],
        step_started_at__lt=deadline,
        stuck_reason="",
    ).select_related("region")
    for snapshot in stuck:
        findings = diagnose(snapshot)
        reason = "; ".join(f"{f.cause}: {f.detail}" for f in findings) or f"no progress in {snapshot.step}"
        Snapshot.objects.filter(pk=snapshot.pk, stuck_reason="").update(stuck_reason=f"Stuck: {reason}")
    Restore.objects.filter(state=Restore.State.RESTORING, started_at__lt=deadline, last_error="").update(
        last_error="Stuck: no progress for 5 minutes; see Backend status"
    )
    expired = Snapshot.objects.filter(
        origin=Snapshot.Origin.SAFETY,
        state=Snapshot.State.AVAILABLE,
        expires_at__lt=timezone.now(),
        hold=False,
    )
    for snapshot in expired:
        services.delete_snapshot(actor=None, snapshot=snapshot, confirm=snapshot.name)
