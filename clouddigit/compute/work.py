"""The worker side of the compute inventory: a new volume's file made (empty or copied from an image)
and a new VM defined; a VM's domain on its host, made to match its row; a volume grown, plugged into or
out of it; a deleted VM's or volume's files removed. No qemu-img runs in a web request.

Tasks (`clouddigit/compute/tasks.py`) call these on the region's hypervisor queue (the long operations,
create, resize, detach and the deletes, under the row's claim through `operations.run`); other apps'
worker steps call
them too (a restore starts its VM, a drill removes its sandbox VM). Nothing here imports the
request side (`services`) or queues a task: services -> tasks -> work (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from clouddigit import operations
from clouddigit.audit.log import Target, record
from clouddigit.audit.models import AuditEntry
from clouddigit.backends import hypervisor, volumes
from clouddigit.compute import chainlocks, recorded_chain
from clouddigit.compute.models import VM, Volume


def domain_spec(vm: VM) -> hypervisor.DomainSpec:
    """What the hypervisor should run for this row: the database is the truth."""
    disks = [
        hypervisor.DiskSpec(
            path=volume.path,
            target_dev=volume.device,
            bus="virtio" if volume.device.startswith("vd") else "scsi",
            fmt="qcow2",
            # The disk at vda/sda boots, whatever its flag: a bootable volume attached as vdb to inspect
            # it on a known-good VM must not compete with that VM's own boot disk.
            boot=volume.is_boot_disk,
        )
        for volume in vm.volumes.order_by("device")
    ]
    flavor = vm.flavor_spec
    return hypervisor.DomainSpec(
        # Readable on the host, and unique even when a name is reused after a VM was deleted.
        name=f"{vm.project.account.slug}-{vm.project.slug}-{vm.name}-{vm.id.hex[:8]}",
        uuid=str(vm.id),
        vcpus=flavor.vcpus,
        memory_mib=flavor.memory_mib,
        disks=disks,
    )


def hypervisor_target(vm: VM) -> tuple[str, hypervisor.DomainSpec]:
    """The host URI and domain of a VM, with a fake (test-driver) host brought in step with the row."""
    uri, spec = vm.host.libvirt_uri, domain_spec(vm)
    hypervisor.adopt_state(uri, spec, running=vm.state in {VM.State.RUNNING, VM.State.STOPPING})
    return uri, spec


def define_vm(vm_id: str) -> None:
    """Worker side: the VM's domain defined (or brought up to date) on its host, left shut off."""
    vm = VM.objects.select_related("host", "project__account").get(pk=vm_id)
    try:
        hypervisor.ensure_domain(vm.host.libvirt_uri, domain_spec(vm))
    except hypervisor.HypervisorError as error:
        VM.objects.filter(pk=vm.pk).update(last_error=str(error))
        raise


def apply_power_state(vm_id: str) -> None:
    """Worker side of start/stop: make the domain match a STARTING/STOPPING row, then settle the row.

    Idempotent: a row already RUNNING or STOPPED is left alone, so a redelivered task does nothing.
    """
    vm = VM.objects.select_related("host", "project__account").get(pk=vm_id)
    uri, spec = vm.host.libvirt_uri, domain_spec(vm)
    operation: Callable[[str, hypervisor.DomainSpec], str]
    if vm.state == VM.State.STARTING:
        action, done, undone, operation = (
            "compute.vm.start",
            VM.State.RUNNING,
            VM.State.STOPPED,
            hypervisor.start,
        )
    elif vm.state == VM.State.STOPPING:
        action, done, undone, operation = (
            "compute.vm.stop",
            VM.State.STOPPED,
            VM.State.RUNNING,
            hypervisor.stop,
        )
    else:
        return
    try:
        operation(uri, spec)
    except hypervisor.HypervisorError as error:
        vm.transition(undone, last_error=str(error))
        record(
            actor=None,
            action=action,
            outcome=AuditEntry.Outcome.FAILED,
            target=Target.of(vm),
            message=str(error),
        )
        raise
    vm.transition(done)


# --- Create: a volume's file, a VM's boot volume and domain ------------------------------------------


def make_volume_file(volume: Volume) -> None:
    """A volume being created gets its qcow2 file: empty, or a copy of the image file `source_path` grown
    to the volume's size. What an interrupted attempt left is removed first: nothing reads a volume
    while it is being created, and a copy cut off half-way must not pass for a whole one."""
    path = Path(volume.path)
    path.unlink(missing_ok=True)
    if not volume.source_path:
        volumes.create(path, volume.size_bytes)
    else:
        volumes.convert(volume.source_path, "qcow2", path)
        operations.checkpoint(f"copied image into {volume.name}")
        try:
            volumes.grow(path, volume.size_bytes)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    recorded_chain.record(volume)


def finish_create_volume(volume_id: str) -> None:
    """Worker side of `create_volume` for a volume of its own (a VM's boot volume is the VM's step)."""
    volume = Volume.objects.filter(pk=volume_id).first()
    if volume is None or volume.state != Volume.State.CREATING:
        return
    operations.checkpoint(f"creating file of {volume.name}")
    make_volume_file(volume)
    volume.transition(Volume.State.AVAILABLE, last_error="", claimed_by="", lease_until=None)


def finish_create_vm(vm_id: str) -> None:
    """Worker side of `create_vm`: the files of its volumes being created, then the domain defined on
    its host, and started when the owner asked for it. Each step can run again after an interruption."""
    vm = VM.objects.select_related("host", "project__account").filter(pk=vm_id).first()
    if vm is None or vm.state != VM.State.CREATING:
        return
    for volume in vm.volumes.filter(state=Volume.State.CREATING):
        operations.checkpoint(f"creating file of {volume.name}")
        make_volume_file(volume)
        volume.transition(Volume.State.ATTACHED, last_error="")
    operations.checkpoint(f"defining VM {vm.name}")
    if not vm.start_when_created:
        hypervisor.ensure_domain(vm.host.libvirt_uri, domain_spec(vm))
    vm.transition(VM.State.STOPPED, last_error="", claimed_by="", lease_until=None)
    if vm.start_when_created:
        # As a start by its owner: a start that fails leaves the VM stopped with the reason.
        vm.transition(VM.State.STARTING)
        apply_power_state(str(vm.pk))


def fail_create_vm(vm_id: str, error: str) -> None:
    """A create that failed: the VM and the volumes it was making are errors that say why; the owner
    retries (`retry_vm`) or deletes the VM."""
    vm = VM.objects.filter(pk=vm_id).first()
    if vm is None or vm.state != VM.State.CREATING:
        return
    reason = f"Create failed: {error}"[:2000]
    vm.transition(VM.State.ERROR, last_error=reason, claimed_by="", lease_until=None)
    for volume in vm.volumes.filter(state=Volume.State.CREATING):
        Path(volume.path).unlink(missing_ok=True)
        volume.transition(Volume.State.ERROR, last_error=reason)
    record(
        actor=None,
        action="compute.vm.create",
        outcome=AuditEntry.Outcome.FAILED,
        target=Target.of(vm),
        message=error,
    )


def fail_vm_operation(vm_id: str, error: str) -> None:
    """A create or a delete that failed, each as its own `fail_*` says."""
    vm = VM.objects.filter(pk=vm_id).first()
    if vm is not None and vm.state == VM.State.CREATING:
        fail_create_vm(vm_id, error)
    elif vm is not None and vm.state == VM.State.DELETING:
        fail_delete_vm(vm_id, error)


def give_up_vm_operation(vm: VM, reason: str) -> None:
    fail_vm_operation(str(vm.pk), f"Gave up: {reason}")


def destroy_vm(vm_id: str) -> None:
    """Worker side of removing a VM with all its volumes: restore drills clean up with it, and a failed
    restore's VM goes with it. The sealed layers its volumes backed onto belong to snapshots."""
    vm = VM.objects.select_related("host", "project__account").get(pk=vm_id)
    _remove_vm(vm)


def _remove_vm(vm: VM) -> None:
    """The domain off the host, then each volume still attached (file and row), then the VM's row.
    Each step can run again: a removed domain or file is simply not there any more."""
    hypervisor.remove(vm.host.libvirt_uri, domain_spec(vm))
    for volume in vm.volumes.select_related("region"):
        _remove_volume_file(volume, purpose=f"deleting VM {vm.name}")
    vm.delete()


def _remove_volume_file(volume: Volume, *, purpose: str) -> None:
    """A volume's active file and row. Under its chain's lock: a measurement or a merge may be reading
    the file (see clouddigit.compute.chainlocks); its snapshots' layers stay with the snapshots."""
    try:
        with chainlocks.locked(volume, purpose=purpose):
            Path(volume.path).unlink(missing_ok=True)
            volume.delete()
    except Volume.DoesNotExist:
        return  # deleted meanwhile (an earlier attempt)


def finish_delete_vm(vm_id: str) -> None:
    """Worker side of `delete_vm`: the domain, then the volumes not kept, then the row."""
    vm = VM.objects.select_related("host", "project__account").filter(pk=vm_id).first()
    if vm is None or vm.state != VM.State.DELETING:
        return
    operations.checkpoint(f"deleting VM {vm.name}")
    _remove_vm(vm)


def fail_delete_vm(vm_id: str, error: str) -> None:
    """A delete that failed leaves the VM stopped (an error, when it was never created) with the reason;
    what was already removed stays removed (the row is the truth: the domain is defined again from it
    when needed), and the owner deletes it again."""
    vm = VM.objects.filter(pk=vm_id).first()
    if vm is not None and vm.state == VM.State.DELETING:
        never_created = vm.volumes.filter(state=Volume.State.ERROR).exists()
        back = VM.State.ERROR if never_created else VM.State.STOPPED
        vm.transition(back, last_error=f"Delete failed: {error}"[:2000])
        record(
            actor=None,
            action="compute.vm.delete",
            outcome=AuditEntry.Outcome.FAILED,
            target=Target.of(vm),
            message=error,
        )


# --- Volumes: grow, attach to a running VM, detach, delete --------------------------------------------


def finish_resize(volume_id: str) -> None:
    """Worker side of `resize_volume`: grow the file (a running real-qemu VM's qemu grows it, so the
    guest sees the size at once), under the chain's lock: a snapshot job may be working on the chain,
    and the volume's active file is read again once the lock is held (a snapshot moves it)."""
    volume = Volume.objects.filter(pk=volume_id).first()
    if volume is None or volume.state != Volume.State.RESIZING or volume.resize_to_bytes is None:
        return
    size_bytes = volume.resize_to_bytes
    with chainlocks.locked(volume, purpose=f"resizing volume {volume.name}"):
        volume = Volume.objects.select_related("vm__host", "vm__project__account").get(pk=volume_id)
        operations.checkpoint(f"resizing {volume.name}")
        vm = volume.vm
        target = hypervisor_target(vm) if vm is not None and vm.state == VM.State.RUNNING else None
        if target is not None and hypervisor.live_overlays_supported(*target):
            hypervisor.resize_disk_live(*target, volume.device, size_bytes)
        else:
            volumes.grow(volume.path, size_bytes)
        recorded_chain.record(volume)
        volume.transition(
            Volume.State.ATTACHED if volume.vm_id else Volume.State.AVAILABLE,
            size_bytes=size_bytes,
            resize_to_bytes=None,
            last_error="",
            claimed_by="",
            lease_until=None,
        )


def plug_in(volume_id: str) -> None:
    """Worker side of attaching to a VM that runs: qemu gets the disk (real hosts), the host's definition
    the new disk list (all hosts). A failure is kept on the volume; detach and attach again to retry."""
    volume = Volume.objects.select_related("vm__host", "vm__project__account").get(pk=volume_id)
    vm = volume.vm
    if vm is None:
        return
    try:
        uri, spec = hypervisor_target(vm)
        if hypervisor.live_overlays_supported(uri, spec):
            disk = next(disk for disk in spec.disks if disk.target_dev == volume.device)
            hypervisor.attach_disk_live(uri, spec, disk)
        else:
            hypervisor.ensure_domain(uri, spec)
    except hypervisor.HypervisorError as error:
        Volume.objects.filter(pk=volume.pk).update(last_error=str(error))
        raise


def finish_detach(volume_id: str) -> None:
    """Worker side of detach. Idempotent: a volume no longer detaching is left alone, and a disk qemu
    has already let go of is not asked for again."""
    volume = Volume.objects.select_related("vm__host", "vm__project__account").get(pk=volume_id)
    if volume.state != Volume.State.DETACHING or volume.vm is None:
        return
    vm = volume.vm
    operations.checkpoint(f"detaching {volume.name}")
    uri, spec = hypervisor_target(vm)
    if vm.state == VM.State.RUNNING and hypervisor.live_overlays_supported(uri, spec):
        hypervisor.detach_disk_live(uri, spec, volume.device)
    volume.transition(Volume.State.AVAILABLE, vm=None, device="", claimed_by="", lease_until=None)
    vm.refresh_from_db()
    hypervisor.ensure_domain(uri, domain_spec(vm))


def fail_volume_operation(volume_id: str, error: str) -> None:
    """A create becomes an error (retried or deleted by the owner, its partial file removed); a resize
    or a detach goes back to what the volume was, a delete to `available`; each with the reason shown
    on the volume."""
    volume = Volume.objects.filter(pk=volume_id).first()
    if volume is None or not volume.in_transition:
        return
    fields: dict = {"last_error": error[:2000], "claimed_by": "", "lease_until": None}
    if volume.state == Volume.State.CREATING:
        Path(volume.path).unlink(missing_ok=True)
        back = Volume.State.ERROR
        fields["last_error"] = f"Create failed: {error}"[:2000]
    elif volume.state == Volume.State.RESIZING:
        back = Volume.State.ATTACHED if volume.vm_id else Volume.State.AVAILABLE
        fields.update(resize_to_bytes=None, last_error=f"Resize failed: {error}"[:2000])
    elif volume.state == Volume.State.DETACHING:
        back = Volume.State.ATTACHED
    else:
        back = Volume.State.AVAILABLE
    volume.transition(back, **fields)


def give_up_volume_operation(volume: Volume, reason: str) -> None:
    fail_volume_operation(str(volume.pk), f"Gave up: {reason}")


def finish_delete_volume(volume_id: str) -> None:
    """Worker side of delete: the volume's own file, then its row. The sealed layers under it belong to
    snapshots (kept, or merged away by their own deletes)."""
    volume = Volume.objects.filter(pk=volume_id).select_related("region").first()
    if volume is None or volume.state != Volume.State.DELETING:
        return
    operations.checkpoint(f"deleting file of {volume.name}")
    _remove_volume_file(volume, purpose=f"deleting volume {volume.name}")
