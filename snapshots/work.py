"""The worker side of snapshots: each function is one step of a long operation, run by its task
(`tasks.py`) under the row's claim, on the region's hypervisor queue.

A step does the file work, records what it is doing on the row (so `diagnose` can say what it waits
for), and can run again after an interruption. It never queues the next step (the task does) and never
imports the request side (`services`): services -> tasks -> work (docs/decisions.md).
"""

from __future__ import annotations

from contextlib import suppress

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from django.utils import timezone

from clouddigit import operations
from clouddigit.backends import hypervisor, volumes
from clouddigit.compute import work as compute
from clouddigit.compute.models import VM, Volume
from clouddigit.errors import Conflict
from clouddigit.statemachine import TransitionRefused
from snapshots import chains, replication_work, sizes
from snapshots.models import Restore, SizeSample, Snapshot, SnapshotDisk

AT_REST = "the disks were at rest (VM stopped or volume not attached)"
DETACH_WAIT_SECONDS = 30


def _step(snapshot: Snapshot, text: str) -> None:
    """Record what the operation is doing now: `diagnose` and the sweeper read it."""
    now, text = timezone.now(), text[:200]
    Snapshot.objects.filter(pk=snapshot.pk).update(step=text, step_started_at=now, stuck_reason="")
    snapshot.step, snapshot.step_started_at, snapshot.stuck_reason = text, now, ""
    operations.checkpoint(text)


def take(snapshot_id: str) -> Snapshot:
    """Create (a CREATING snapshot): freeze (if asked and possible), seal every volume, thaw, record."""
    snapshot = Snapshot.objects.select_related("vm__host", "vm__project__account").get(pk=snapshot_id)
    disks = list(snapshot.disks.select_related("volume__backing_layer", "volume__region"))
    detaching = [disk.volume_name for disk in disks if disk.existing_volume.state == Volume.State.DETACHING]
    if detaching:
        _step(snapshot, f"waiting for volume {', '.join(detaching)} to finish detaching")
        raise operations.Waiting(snapshot.step, seconds=DETACH_WAIT_SECONDS)
    pending = [disk for disk in disks if disk.layer_id is None]
    vm = snapshot.vm
    # Before any freeze: the guest stays frozen only while the overlays are made, never while waiting.
    with chains.locked(
        *[disk.existing_volume for disk in pending], purpose=f"taking snapshot {snapshot.name}"
    ):
        if pending and vm is not None and vm.state == VM.State.RUNNING:
            achieved, reason = _seal_running(snapshot, vm, pending)
        else:
            if pending:
                _step(snapshot, "creating overlays")
                _seal(pending)
            achieved, reason = Snapshot.Consistency.APPLICATION, AT_REST
    if len(pending) < len(disks):
        achieved, reason = Snapshot.Consistency.CRASH, "resumed after an interruption: volumes captured apart"
    snapshot.transition(
        Snapshot.State.AVAILABLE,
        consistency_achieved=achieved,
        consistency_reason=reason[:300],
        completed_at=timezone.now(),
        step="",
        last_error="",
    )
    return snapshot


def _seal(disks: list[SnapshotDisk], vm: VM | None = None) -> None:
    """New overlays for the disks: through libvirt when a real qemu runs the VM, else with qemu-img."""
    if vm is not None:
        uri, spec = compute.hypervisor_target(vm)
        if hypervisor.live_overlays_supported(uri, spec):
            chains.seal_live(uri, spec, disks)
            return
    for disk in disks:
        with transaction.atomic():
            layer = chains.seal_active(disk.existing_volume, disk.overlay_path)
            SnapshotDisk.objects.filter(pk=disk.pk).update(layer=layer)
            disk.layer = layer
        operations.checkpoint(f"sealed {disk.volume_name}")


def _seal_running(snapshot: Snapshot, vm: VM, disks: list[SnapshotDisk]) -> tuple[str, str]:
    if snapshot.consistency_requested == Snapshot.Consistency.CRASH:
        _step(snapshot, "creating overlays")
        _seal(disks, vm)
        return Snapshot.Consistency.CRASH, "crash-consistent was asked for"
    _step(snapshot, "freezing the guest file systems (qemu-guest-agent)")
    uri, spec = compute.hypervisor_target(vm)
    with hypervisor.frozen(uri, spec, settings.HYPERVISOR_FREEZE_TIMEOUT_SECONDS) as freeze:
        _record_agent(vm, freeze.frozen)
        _step(snapshot, "creating overlays" + (" while frozen" if freeze.frozen else ""))
        _seal(disks, vm)
        _step(snapshot, "thawing the guest file systems" if freeze.frozen else "recording")
    return freeze.consistency, freeze.reason


def _record_agent(vm: VM, responded: bool) -> None:
    """A freeze attempt is the freshest word on the guest agent: the VM shows what it found, and when.
    A freeze cannot tell "not installed" from "not running", so a known "not installed" stays."""
    if responded:
        status = VM.GuestAgent.RUNNING
    elif vm.guest_agent == VM.GuestAgent.NOT_INSTALLED:
        status = VM.GuestAgent.NOT_INSTALLED
    else:
        status = VM.GuestAgent.NOT_RUNNING
    now = timezone.now()
    VM.objects.filter(pk=vm.pk).update(guest_agent=status, guest_agent_checked_at=now)
    vm.guest_agent, vm.guest_agent_checked_at = status, now


def finish_rollback(safety_id: str) -> Snapshot:
    """Roll back (a CREATING safety snapshot): seal each volume's current data as the safety snapshot,
    and continue the volume on the layer of the snapshot rolled back to."""
    safety = Snapshot.objects.select_related("rollback_of").get(pk=safety_id)
    assert safety.rollback_of is not None  # not deleted while its roll-back runs (_in_use)
    source_layers = {disk.volume_id: disk.layer for disk in safety.rollback_of.disks.select_related("layer")}
    for disk in safety.disks.select_related("volume__backing_layer").filter(layer__isnull=True):
        _step(safety, f"rolling {disk.volume_name} back to {safety.rollback_of.name}")
        source = source_layers[disk.volume_id]
        assert source is not None  # an available snapshot's disks have their layers
        volume = disk.existing_volume
        with (
            chains.locked(volume, source, purpose=f"rolling back to snapshot {safety.rollback_of.name}"),
            transaction.atomic(),
        ):
            layer = chains.seal_active(volume, disk.overlay_path, new_backing=source)
            SnapshotDisk.objects.filter(pk=disk.pk).update(layer=layer)
        operations.checkpoint(f"sealed {disk.volume_name}")
    safety.transition(
        Snapshot.State.AVAILABLE,
        consistency_achieved=Snapshot.Consistency.APPLICATION,
        consistency_reason=AT_REST,
        completed_at=timezone.now(),
        step="",
    )
    return safety


def finish_delete(snapshot_id: str) -> None:
    """Delete (a DELETING snapshot): merge its layers into their children, then remove the row."""
    snapshot = Snapshot.objects.get(pk=snapshot_id)
    _step(snapshot, "merging the snapshot's layers into their children")
    for disk in snapshot.disks.select_related("layer"):
        if disk.layer is not None:
            with chains.locked(disk.layer, purpose=f"deleting snapshot {snapshot.name}"):
                chains.merge_away(disk.layer)
            operations.checkpoint(f"merged {disk.volume_name}")
        elif snapshot.completed_at is None and disk.overlay_path:
            # Never completed: the volume may already write to the overlay named for this disk.
            if disk.volume is None or disk.volume.path != disk.overlay_path:
                chains.delete_volume_file(disk.overlay_path)
    if snapshot.is_copy:
        replication_work.release(snapshot)
    snapshot.delete()


def finish_restore(restore_id: str) -> None:
    """Restore (a RESTORING restore): the overlay files, then (VM) the domain started; records
    time-to-restore."""
    restore = Restore.objects.select_related("snapshot", "vm__host", "volume").get(pk=restore_id)
    if restore.vm is not None:
        restored = list(restore.vm.volumes.all())
    elif restore.volume is not None:
        restored = [restore.volume]
    else:
        raise Conflict("the restored volume was deleted before it was ready; restore again.")
    for volume in restored:
        with chains.locked(volume, purpose=f"restoring snapshot {restore.snapshot_name} to {volume.name}"):
            if volume.state == Volume.State.CREATING:
                assert volume.backing_layer is not None  # the snapshot's layer, set when the restore began
                chains.new_volume_file(volume.path, volume.backing_layer)
                operations.checkpoint(f"restored file of {volume.name}")
                volume.transition(Volume.State.ATTACHED if volume.vm_id else Volume.State.AVAILABLE)
    if restore.vm is not None and restore.vm.state in {VM.State.STOPPED, VM.State.STARTING}:
        if restore.vm.state == VM.State.STOPPED:
            restore.vm.transition(VM.State.STARTING)
        operations.checkpoint(f"starting restored VM {restore.vm.name}")
        compute.apply_power_state(str(restore.vm.pk))
    finished = timezone.now()
    restore.transition(
        Restore.State.DONE, finished_at=finished, seconds=(finished - restore.started_at).total_seconds()
    )


def measure(snapshot_id: str) -> None:
    """Checksums (once: layers never change) and the billed / reclaimable sizes (every time) of an
    available snapshot. It claims nothing: it changes no state, and measurements share the chain lock."""
    snapshot = Snapshot.objects.filter(pk=snapshot_id, state=Snapshot.State.AVAILABLE).first()
    if snapshot is None:
        return
    billed = reclaimable = 0
    for disk in snapshot.disks.select_related("layer", "volume"):
        if disk.layer is None:
            continue
        # Shared: measurements of one chain run together; a merge or a new snapshot waits for them.
        try:
            with chains.locked(
                *[each for each in (disk.layer, disk.volume) if each is not None],
                purpose=f"measuring snapshot {snapshot.name}",
                shared=True,
            ):
                if not disk.checksum:
                    disk.checksum = volumes.checksum(disk.layer.path)
                    SnapshotDisk.objects.filter(pk=disk.pk).update(checksum=disk.checksum)
                if disk.volume is not None:
                    billed += sizes.billed_bytes(disk.layer.path, disk.volume.path)
                reclaimable += sizes.reclaimable_bytes(disk.layer)
        except ObjectDoesNotExist:
            return  # the snapshot (or its volume) was deleted while this waited for the chain
    now = timezone.now()
    Snapshot.objects.filter(pk=snapshot.pk).update(
        billed_bytes=billed, reclaimable_bytes=reclaimable, sizes_measured_at=now
    )
    SizeSample.objects.create(snapshot=snapshot, at=now, billed_bytes=billed, reclaimable_bytes=reclaimable)


def fail(snapshot_id: str, error: str) -> None:
    """A step failed: keep the row, say why; `retry` starts it again. A row that has left CREATING or
    DELETING meanwhile (or is gone) is left as it is."""
    with suppress(Snapshot.DoesNotExist, TransitionRefused):
        Snapshot.objects.get(pk=snapshot_id).transition(Snapshot.State.ERROR, last_error=error[:2000])


def give_up(snapshot: Snapshot, reason: str) -> None:
    """The reconciler's last word on an operation whose worker kept dying (a copy's is recorded as one of
    its failures, too)."""
    (replication_work.fail if snapshot.is_copy else fail)(str(snapshot.pk), f"Gave up: {reason}")


def fail_restore(restore_id: str, error: str) -> None:
    with suppress(Restore.DoesNotExist, TransitionRefused):
        Restore.objects.get(pk=restore_id).transition(
            Restore.State.FAILED, last_error=error[:2000], finished_at=timezone.now()
        )


def give_up_restore(restore: Restore, reason: str) -> None:
    fail_restore(str(restore.pk), f"Gave up: {reason}")
