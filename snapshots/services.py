"""Every snapshot operation. Console views, API views, the CLI (through the API), beat and other apps
call these.

This is the request side: it validates, checks permission, writes rows in a transitional state and
queues a task (`tasks.py`), which runs the worker side (`work.py`) on the region's hypervisor queue.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from pathlib import Path

from celery import Task
from django.conf import settings
from django.utils import timezone

from clouddigit import operations
from clouddigit.access import actor_name, require
from clouddigit.audit.log import audited
from clouddigit.backends import hypervisor
from clouddigit.compute import hooks
from clouddigit.compute import services as compute
from clouddigit.compute.flavors import FLAVORS
from clouddigit.compute.models import VM, Project, Volume
from clouddigit.compute.permissions import Perm
from clouddigit.compute.work import destroy_vm, domain_spec
from clouddigit.errors import Conflict, InvalidRequest, ServiceError
from clouddigit.names import check_name, derived_name, shown
from clouddigit.queueing import enqueue, hypervisor_queue
from images import storage
from snapshots import chains, replication, tasks
from snapshots.models import (
    DEFAULT_SNAPSHOTS_PER_VOLUME,
    Restore,
    Snapshot,
    SnapshotDisk,
    SnapshotLimit,
)

log = logging.getLogger(__name__)

SAFETY_SNAPSHOT_LIFETIME = timedelta(hours=24)


class QuotaExceeded(ServiceError):
    code = "SnapshotQuotaExceeded"
    status = 409


class RestoreNeedsConfirmation(ServiceError):
    code = "RestoreNeedsConfirmation"
    status = 409


def _new_file(volume_dir: str) -> str:
    return str(Path(volume_dir) / f"{uuid.uuid4()}.qcow2")


# --- Limits -----------------------------------------------------------------------------------------


def snapshot_limit(volume: Volume) -> int:
    raised = (
        SnapshotLimit.objects.filter(volume=volume).first()
        or SnapshotLimit.objects.filter(project=volume.project_id, volume__isnull=True).first()
    )
    return raised.limit if raised else DEFAULT_SNAPSHOTS_PER_VOLUME


def _live_snapshots_of(volume: Volume):
    return Snapshot.objects.filter(disks__volume=volume).exclude(state=Snapshot.State.DELETING).distinct()


def snapshots_of_volume(volume: Volume):
    """The snapshots holding this volume's data (volume snapshots, and VM snapshots that captured it)."""
    return _live_snapshots_of(volume).order_by("-created_at")


def deleted_with_volume(snapshots) -> tuple[list[Snapshot], list[Snapshot]]:
    """Which of a volume's snapshots deleting it with its snapshots deletes (those holding only this
    volume), and which it keeps: a VM snapshot that also holds other volumes is theirs too."""
    deleted: list[Snapshot] = []
    kept: list[Snapshot] = []
    for snapshot in snapshots:
        (deleted if snapshot.disks.count() == 1 else kept).append(snapshot)
    return deleted, kept


def _make_room(volume: Volume) -> None:
    """Rolling limit: past it, the oldest policy-created snapshot goes; manual ones never silently."""
    limit = snapshot_limit(volume)
    existing = _live_snapshots_of(volume)
    if existing.count() < limit:
        return
    oldest = existing.filter(origin=Snapshot.Origin.POLICY, hold=False).order_by("created_at").first()
    if oldest is None:
        raise QuotaExceeded(
            f"Volume {volume.name} has {existing.count()} snapshots (limit {limit}) and none of them was "
            "created by a policy, so none is rotated out. Delete a snapshot you no longer need, or ask an "
            "admin to raise the limit with a ticket reference."
        )
    delete_snapshot(actor=None, snapshot=oldest, confirm=oldest.name)


@audited("snapshot.limit.raise")
def raise_limit(
    *, actor, limit: int, ticket: str, project: Project | None = None, volume: Volume | None = None
):
    scope = volume.project if volume else project
    if scope is None:
        raise InvalidRequest("Name the project or the volume whose limit to raise.", field="project")
    require(actor, Perm.MANAGE_SNAPSHOT_QUOTAS, scope, "raise snapshot limits")
    if not ticket.strip():
        raise InvalidRequest("A ticket reference is required to raise a limit.", field="ticket")
    if limit < 1 or limit > 10_000:
        raise InvalidRequest("The limit must be between 1 and 10000.", field="limit")
    return SnapshotLimit.objects.create(
        project=project if volume is None else None,
        volume=volume,
        limit=limit,
        ticket=ticket.strip(),
        set_by=actor_name(actor),
    )


# --- Create -----------------------------------------------------------------------------------------


def _vm_definition(vm: VM | None) -> dict:
    if vm is None:
        return {}
    flavor = FLAVORS[vm.flavor]
    spec = domain_spec(vm)
    return {
        "name": vm.name,
        "flavor": vm.flavor,
        "bare_metal": flavor.bare_metal,
        "vcpus": flavor.vcpus,
        "memory_mib": flavor.memory_mib,
        "vpc": vm.vpc,
        "nics": [{"vpc": vm.vpc, "model": "virtio"}],
        "host": vm.host.name,
        "tags": vm.tags,
        "domain_xml": hypervisor.domain_xml(spec, "kvm"),
    }


@audited("snapshot.create")
def create_snapshot(
    *,
    actor,
    volume: Volume | None = None,
    vm: VM | None = None,
    name: str = "",
    consistency: str = Snapshot.Consistency.APPLICATION,
    tags: dict | None = None,
    origin: str = Snapshot.Origin.MANUAL,
    policy_name: str = "",
) -> Snapshot:
    """A volume snapshot (`volume=`) or a VM snapshot of all the VM's volumes (`vm=`)."""
    if (volume is None) == (vm is None):
        raise InvalidRequest("Snapshot either one volume or one VM.", field="volume")
    source = vm or volume
    assert source is not None  # one of them, checked above
    require(actor, Perm.CREATE_SNAPSHOTS, source.project, "create snapshots")
    if consistency not in Snapshot.Consistency.values:
        raise InvalidRequest("Consistency is 'application' or 'crash'.", field="consistency")
    tags = compute.check_tags(tags)
    owner = source if isinstance(source, VM) else source.vm
    if owner is not None and owner.state == VM.State.DELETING:
        raise Conflict(f"VM {owner.name} is being deleted; there is nothing to snapshot.")
    captured = [source] if isinstance(source, Volume) else list(source.volumes.order_by("device"))
    if not captured:
        raise InvalidRequest(f"VM {source.name} has no volumes to snapshot.", field="vm")
    deleting = [each.name for each in captured if each.state == Volume.State.DELETING]
    if deleting:
        raise Conflict(f"Volume {', '.join(deleting)} is being deleted: there is nothing left to snapshot.")
    storage.check_not_full(project=source.project, what="a new snapshot")
    for each in captured:
        _make_room(each)
    name = check_name(name) if name else derived_name(source.name, f"-{timezone.now():%Y%m%d-%H%M%S}")
    snapshot = Snapshot.objects.create(
        project=source.project,
        region=source.region,
        name=name,
        kind=Snapshot.Kind.VM if vm else Snapshot.Kind.VOLUME,
        vm=owner,
        vm_name=owner.name if owner else "",
        vm_definition=_vm_definition(owner),
        origin=origin,
        policy_name=policy_name,
        consistency_requested=consistency,
        tags=tags,
        step="queued for the hypervisor worker",
        step_started_at=timezone.now(),
        created_by=actor_name(actor),
        **operations.queued(),
    )
    for each in captured:
        _add_disk(snapshot, each)
    enqueue(tasks.take, str(snapshot.pk), queue=hypervisor_queue(snapshot.region_id))
    return snapshot


def _add_disk(snapshot: Snapshot, volume: Volume) -> None:
    """The row of one volume the snapshot captures, with the new file its writes go to meanwhile."""
    SnapshotDisk.objects.create(
        snapshot=snapshot,
        volume=volume,
        volume_name=volume.name,
        device=volume.device,
        bootable=volume.bootable,
        size_bytes=volume.size_bytes,
        overlay_path=_new_file(volume.region.volume_dir),
    )


def vm_delete_blocker(vm: VM) -> str:
    """Why `vm` cannot be deleted now, seen from snapshots: a snapshot (or roll-back) being taken of its
    volumes would find them gone. Registered with compute's delete checks."""
    taking = Snapshot.objects.filter(state=Snapshot.State.CREATING, disks__volume__vm=vm).distinct().first()
    return f"snapshot {taking.name} of it is being taken" if taking else ""


def resume(snapshot: Snapshot) -> None:
    """Queue the next step of the row's operation, which is decided by what the row is: a safety
    snapshot finishes its roll-back (sealing it alone would keep the old data in the volume)."""
    step: Task[[str], None]
    if snapshot.is_copy and snapshot.state == Snapshot.State.CREATING:
        replication.resume(snapshot)
        return
    if snapshot.state == Snapshot.State.DELETING:
        step = tasks.finish_delete
    elif snapshot.rollback_of_id is not None:
        step = tasks.finish_rollback
    else:
        step = tasks.take
    enqueue(step, str(snapshot.pk), queue=hypervisor_queue(snapshot.region_id))


@audited("snapshot.retry", target="snapshot")
def retry(*, actor, snapshot: Snapshot) -> Snapshot:
    """Queue the interrupted or failed operation again; it picks up where it stopped."""
    require(actor, Perm.CREATE_SNAPSHOTS, snapshot.project, "retry snapshot operations")
    if snapshot.origin == Snapshot.Origin.SAFETY and snapshot.completed_at is None:
        if snapshot.rollback_of_id is None:
            raise Conflict(
                f"Roll-back {snapshot} cannot go on: the snapshot it rolled back to is gone. Delete this "
                "safety snapshot; the volume still holds the data it had before the roll-back."
            )
    if snapshot.worker_on_it:
        raise Conflict(
            f"Snapshot {snapshot} is being worked on now ({snapshot.step or snapshot.state}); "
            "retry it if it stops making progress."
        )
    if snapshot.state == Snapshot.State.ERROR:
        # A snapshot that never completed failed while being created; a completed one while being deleted.
        target = Snapshot.State.CREATING if snapshot.completed_at is None else Snapshot.State.DELETING
        snapshot.transition(target, last_error="", stuck_reason="", **operations.restarted())
    elif snapshot.state in {Snapshot.State.CREATING, Snapshot.State.DELETING}:
        fields = {"stuck_reason": "", **operations.restarted()}
        Snapshot.objects.filter(pk=snapshot.pk).update(**fields)
        for name, value in fields.items():
            setattr(snapshot, name, value)
    else:
        raise Conflict(f"Snapshot {snapshot} is {snapshot.state}: there is nothing to retry.")
    resume(snapshot)
    return snapshot


# --- Tags -------------------------------------------------------------------------------------------


@audited("snapshot.tag", target="snapshot")
def set_tags(
    *, actor, snapshot: Snapshot, add: dict | None = None, remove: list[str] | None = None
) -> Snapshot:
    require(actor, Perm.CREATE_SNAPSHOTS, snapshot.project, "tag snapshots")
    tags = {**snapshot.tags, **compute.check_tags(add)}
    for key in remove or []:
        tags.pop(key, None)
    Snapshot.objects.filter(pk=snapshot.pk).update(tags=tags)
    snapshot.tags = tags
    return snapshot


@audited("snapshot.hold", target="snapshot")
def set_hold(*, actor, snapshot: Snapshot, hold: bool) -> Snapshot:
    """Pin (or release) a snapshot: retention and the rolling limit never delete a held snapshot."""
    require(actor, Perm.CREATE_SNAPSHOTS, snapshot.project, "pin snapshots")
    Snapshot.objects.filter(pk=snapshot.pk).update(hold=hold)
    snapshot.hold = hold
    return snapshot


# --- Delete -----------------------------------------------------------------------------------------


def _being_copied(snapshot: Snapshot) -> str:
    copy = replication.copying(snapshot)
    return f"it is being copied to {copy.region_id} as {copy.name} ({copy.pk})" if copy else ""


def _in_use(snapshot: Snapshot) -> str:
    copying = _being_copied(snapshot)
    if copying:
        return copying
    running = snapshot.restores.filter(state=Restore.State.RESTORING).first()
    if running:
        return (
            f"a restore to {running.name} (started {running.started_at:%Y-%m-%d %H:%M:%S} UTC) is reading it"
        )
    if snapshot.safety_snapshots.filter(state=Snapshot.State.CREATING).exists():
        return "a roll-back to it is running"
    if snapshot.safety_snapshots.filter(state=Snapshot.State.ERROR, completed_at=None).exists():
        return "a roll-back to it failed and waits for Retry (or for its safety snapshot to be deleted)"
    return ""


@audited("snapshot.delete", target="snapshot")
def delete_snapshot(*, actor, snapshot: Snapshot, confirm: str) -> Snapshot:
    """Merge the snapshot's layers away; every other snapshot and the volumes read back the same.
    `confirm` is the snapshot's name, typed by the user: its point in time is gone for good (retention
    and the rolling limit confirm with the name they chose)."""
    require(actor, Perm.DELETE_SNAPSHOTS, snapshot.project, "delete snapshots")
    if confirm != snapshot.name:
        pinned = " although it is pinned" if snapshot.hold else ""
        raise InvalidRequest(
            f"Deleting a snapshot destroys its point in time for good{pinned}. "
            f"Type {snapshot.name!r} to confirm.",
            field="confirm",
        )
    busy = _in_use(snapshot)
    if busy:
        raise Conflict(
            f"Snapshot {snapshot} cannot be deleted now: {busy}. Delete it once that has finished."
        )
    snapshot.transition(
        Snapshot.State.DELETING,
        step="queued for the hypervisor worker",
        step_started_at=timezone.now(),
        stuck_reason="",
        **operations.restarted(),
    )
    enqueue(tasks.finish_delete, str(snapshot.pk), queue=hypervisor_queue(snapshot.region_id))
    return snapshot


# --- Restore ----------------------------------------------------------------------------------------


def restore_warnings(snapshot: Snapshot, flavor: str | None) -> list[str]:
    """The spec's "Restore creates volume but VM won't boot" checks that can be made before starting."""
    warnings = []
    if flavor and snapshot.vm_definition and FLAVORS[flavor].bare_metal != snapshot.bare_metal:
        taken = snapshot.vm_definition.get("flavor")
        warnings.append(
            f"Kernel panic on init is likely: the snapshot was taken on {taken} "
            f"({'bare metal' if snapshot.bare_metal else 'a VM'}) and you restore onto {flavor} "
            f"({'bare metal' if FLAVORS[flavor].bare_metal else 'a VM'}). Pick a compatible flavor."
        )
    for disk in snapshot.disks.all():
        if disk.bootable and disk.device not in {"vda", "sda"}:
            warnings.append(
                f'"No bootable device": the boot volume {disk.volume_name} was attached as {disk.device}, '
                "not vda/sda. Detach it and reattach it as the boot disk after the restore."
            )
    return warnings


def disk_named(snapshot: Snapshot, reference: str | None) -> SnapshotDisk | None:
    """The disk of `snapshot` that `reference` names: its id, its device (`vdb`) or its volume's name.
    None when not asked for (a single-disk snapshot needs no name)."""
    reference = (reference or "").strip()
    if not reference:
        return None
    disks = list(snapshot.disks.all())
    found = [d for d in disks if str(d.pk) == reference.lower()] or [
        d for d in disks if reference in {d.device, d.volume_name}
    ]
    if len(found) != 1:
        named = ", ".join(f"{d.device or '-'} ({d.volume_name})" for d in disks)
        raise InvalidRequest(
            f"Snapshot {snapshot} has no disk {reference[:63]!r}: name one by device or volume name "
            f"({named}) or by id.",
            field="disk",
        )
    return found[0]


def _require_available(snapshot: Snapshot) -> None:
    if snapshot.state != Snapshot.State.AVAILABLE:
        raise Conflict(
            f"Snapshot {snapshot} is {snapshot.state}; only an available snapshot can be restored."
        )


@audited("snapshot.restore", target="snapshot")
def restore_to_volume(*, actor, snapshot: Snapshot, name: str, disk: SnapshotDisk | None = None) -> Restore:
    """A new volume with the snapshot's data; the original volume is untouched."""
    require(actor, Perm.RESTORE_SNAPSHOTS, snapshot.project, "restore snapshots")
    _require_available(snapshot)
    disks = list(snapshot.disks.select_related("layer"))
    if disk is None:
        if len(disks) != 1:
            raise InvalidRequest(
                f"Snapshot {snapshot} holds {len(disks)} volumes: name the one to restore, or restore the "
                "whole VM instead.",
                field="disk",
            )
        disk = disks[0]
    name = check_name(name)
    restore = Restore.objects.create(
        snapshot=snapshot,
        snapshot_name=snapshot.name,
        project=snapshot.project,
        kind=Restore.Kind.VOLUME,
        name=name,
        requested_by=actor_name(actor),
        **operations.queued(),
    )
    restore.volume = _new_restored_volume(snapshot, disk, name, bootable=disk.bootable)
    restore.save(update_fields=["volume"])
    enqueue(tasks.finish_restore, str(restore.pk), queue=hypervisor_queue(snapshot.region_id))
    return restore


def _new_restored_volume(snapshot: Snapshot, disk: SnapshotDisk, name: str, *, bootable: bool) -> Volume:
    if Volume.objects.filter(project=snapshot.project, region=snapshot.region, name=name).exists():
        raise Conflict(f"A volume named {name!r} already exists in {snapshot.project}.", field="name")
    return Volume.objects.create(
        project=snapshot.project,
        region=snapshot.region,
        name=name,
        size_bytes=disk.size_bytes,
        state=Volume.State.CREATING,
        bootable=bootable,
        path=_new_file(snapshot.region.volume_dir),
        backing_layer=disk.layer,
        tags={**snapshot.tags, "restored-from": str(snapshot.pk)[:8]},
    )


@audited("snapshot.restore-vm", target="snapshot")
def restore_to_vm(
    *,
    actor,
    snapshot: Snapshot,
    name: str,
    vpc: str,
    flavor: str | None = None,
    acknowledge_warnings: bool = False,
    keep_tags: list[str] | None = None,
) -> Restore:
    """A new VM from a VM snapshot: its volumes restored with the same devices, then started. It keeps
    the source VM's tags named in `keep_tags` (None: all but those that would put it under a snapshot
    policy, see `restored_tags`); which were left out, and why, is noted on the restore."""
    require(actor, Perm.RESTORE_SNAPSHOTS, snapshot.project, "restore snapshots")
    _require_available(snapshot)
    if snapshot.kind != Snapshot.Kind.VM:
        raise InvalidRequest("Only a VM snapshot restores to a new VM; restore this one to a new volume.")
    flavor = flavor or snapshot.vm_definition.get("flavor")
    if flavor not in FLAVORS:
        raise InvalidRequest(f"Unknown flavor {flavor!r}.", field="flavor")
    warnings = restore_warnings(snapshot, flavor)
    if warnings and not acknowledge_warnings:
        raise RestoreNeedsConfirmation(
            " ".join(warnings) + " Restore again with the warnings acknowledged to go on."
        )
    name, vpc = check_name(name), check_name(vpc, field="vpc")
    tags, dropped = restored_tags(snapshot, keep_tags)
    if VM.objects.filter(project=snapshot.project, region=snapshot.region, name=name).exists():
        raise Conflict(f"A VM named {name!r} already exists in {snapshot.project}.", field="name")
    vm = VM.objects.create(
        project=snapshot.project,
        region=snapshot.region,
        host=compute.place(snapshot.region),
        name=name,
        flavor=flavor,
        vpc=vpc,
        tags={**tags, "restored-from": str(snapshot.pk)[:8]},
    )
    restore = Restore.objects.create(
        snapshot=snapshot,
        snapshot_name=snapshot.name,
        project=snapshot.project,
        kind=Restore.Kind.VM,
        name=name,
        vm=vm,
        warnings=warnings + dropped,
        requested_by=actor_name(actor),
        **operations.queued(),
    )
    for disk in snapshot.disks.select_related("layer"):
        volume = _new_restored_volume(
            snapshot,
            disk,
            derived_name(name, f"-{disk.device or disk.volume_name}"),
            bootable=disk.bootable,
        )
        Volume.objects.filter(pk=volume.pk).update(vm=vm, device=disk.device)
    enqueue(tasks.finish_restore, str(restore.pk), queue=hypervisor_queue(snapshot.region_id))
    return restore


def source_tags(snapshot: Snapshot) -> dict:
    """The tags the VM had when the snapshot was taken."""
    return dict(snapshot.vm_definition.get("tags") or {})


def tag_choices(snapshot: Snapshot) -> tuple[dict, dict[str, str]]:
    """The source VM's tags, and {key: why not kept by default} for those that would put a restored VM
    under a snapshot policy of the project."""
    tags = source_tags(snapshot)
    return tags, hooks.scoped_tags(snapshot.project, tags)


def restored_tags(snapshot: Snapshot, keep: list[str] | None) -> tuple[dict, list[str]]:
    """The tags a VM restored from `snapshot` gets, and a note for each tag left out that mattered.

    `keep` names the source tags to keep; None keeps all but the policy-scope ones, so that a sandbox
    restore of a prod VM never falls under the prod policy without being asked to."""
    tags, scoped = tag_choices(snapshot)
    if keep is None:
        keep = [key for key in tags if key not in scoped]
    unknown = [key for key in keep if key not in tags]
    if unknown:
        having = ", ".join(sorted(tags)) or "none"
        raise InvalidRequest(
            f"The VM snapshotted had no tag {shown(str(unknown[0]))}; its tags are: {having}.",
            field="keep_tags",
        )
    notes = [f"{key}={tags[key]} not kept: {why}." for key, why in scoped.items() if key not in keep]
    return {key: value for key, value in tags.items() if key in keep}, notes


def resume_restore(restore: Restore) -> None:
    made = restore.vm or restore.volume or restore.snapshot
    region = made.region_id if made else settings.DEFAULT_REGION
    enqueue(tasks.finish_restore, str(restore.pk), queue=hypervisor_queue(region))


@audited("snapshot.restore.retry", target="restore")
def retry_restore(*, actor, restore: Restore) -> Restore:
    """Go on with a failed or interrupted restore: the files it made are reused."""
    require(actor, Perm.RESTORE_SNAPSHOTS, restore.project, "retry restores")
    if restore.worker_on_it:
        raise Conflict(f"The {restore} is being worked on now; retry it if it stops making progress.")
    if restore.state == Restore.State.FAILED:
        restore.transition(Restore.State.RESTORING, last_error="", finished_at=None, **operations.restarted())
    elif restore.state == Restore.State.RESTORING:
        Restore.objects.filter(pk=restore.pk).update(last_error="", **operations.restarted())
    else:
        raise Conflict(f"The {restore} is {restore.state}: there is nothing to retry.")
    resume_restore(restore)
    return restore


@audited("snapshot.restore.delete", target="restore")
def delete_restore(*, actor, restore: Restore) -> None:
    """Remove a failed restore and what it had made (the new volume, or the new VM and its volumes)."""
    require(actor, Perm.RESTORE_SNAPSHOTS, restore.project, "delete restores")
    if restore.state != Restore.State.FAILED:
        raise Conflict(
            f"The {restore} is {restore.state}; only a failed restore is deleted (a finished one's volume or "
            "VM is deleted like any other)."
        )
    if restore.vm_id is not None:
        destroy_vm(str(restore.vm_id))
    elif restore.volume is not None and restore.volume.vm_id is None:
        chains.delete_volume_file(restore.volume.path)
        restore.volume.delete()
    restore.delete()


# --- Roll-back --------------------------------------------------------------------------------------


def rollback_confirmation(snapshot: Snapshot) -> str:
    """What the user types to confirm: the name of what is rolled back."""
    return snapshot.vm_name if snapshot.kind == Snapshot.Kind.VM else snapshot.disks.get().volume_name


@audited("snapshot.rollback", target="snapshot")
def rollback(*, actor, snapshot: Snapshot, confirm: str) -> Snapshot:
    """Revert the volume (or every volume of the stopped VM) to the snapshot. Not undoable, except that
    a safety snapshot of the current state is kept for 24 hours first. Returns that safety snapshot."""
    require(actor, Perm.ROLLBACK_SNAPSHOTS, snapshot.project, "roll back volumes")
    _require_available(snapshot)
    copying = _being_copied(snapshot)
    if copying:
        raise Conflict(
            f"Cannot roll back to snapshot {snapshot} now: {copying}. Roll back once it has landed."
        )
    expected = rollback_confirmation(snapshot)
    if confirm != expected:
        raise InvalidRequest(
            f"Roll-back replaces the current data and is not undoable. Type {expected!r} to confirm "
            "(a safety snapshot of the current data is kept for 24 hours).",
            field="confirm",
        )
    disks = list(snapshot.disks.select_related("volume__vm", "layer"))
    for disk in disks:
        volume = disk.volume
        if volume is None:
            raise Conflict(f"Volume {disk.volume_name} no longer exists; restore to a new volume instead.")
        if volume.vm is not None and volume.vm.state != VM.State.STOPPED:
            raise Conflict(
                f"Volume {volume.name} is attached to VM {volume.vm.name}, which is {volume.vm.state}. "
                "Stop the VM first, or restore to a new volume and leave this one as it is."
            )
        if volume.state not in {Volume.State.AVAILABLE, Volume.State.ATTACHED}:
            raise Conflict(f"Volume {volume.name} is {volume.state}; wait until it is available.")
    safety = Snapshot.objects.create(
        project=snapshot.project,
        region=snapshot.region,
        name=f"safety-before-rollback-{timezone.now():%Y%m%d-%H%M%S}",
        kind=snapshot.kind,
        vm=snapshot.vm,
        vm_name=snapshot.vm_name,
        vm_definition=_vm_definition(snapshot.vm),
        origin=Snapshot.Origin.SAFETY,
        consistency_requested=Snapshot.Consistency.APPLICATION,
        expires_at=timezone.now() + SAFETY_SNAPSHOT_LIFETIME,
        rollback_of=snapshot,
        step=f"queued: roll back to {snapshot.name}",
        step_started_at=timezone.now(),
        created_by=actor_name(actor),
        **operations.queued(),
    )
    for disk in disks:
        _add_disk(safety, disk.existing_volume)
    enqueue(tasks.finish_rollback, str(safety.pk), queue=hypervisor_queue(snapshot.region_id))
    return safety
