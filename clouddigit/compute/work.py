"""The worker side of the compute inventory: a VM's domain on its host, made to match its row; a
volume plugged into or out of it; a deleted VM's or volume's files removed.

Tasks (`clouddigit/compute/tasks.py`) call these on the region's hypervisor queue (the long operations,
detach and the deletes, under the row's claim through `operations.run`); other apps' worker steps call
them too (a restore starts its VM, a drill removes its sandbox VM). Nothing here imports the
request side (`services`) or queues a task: services -> tasks -> work (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from clouddigit import operations
from clouddigit.audit.log import Target, record
from clouddigit.audit.models import AuditEntry
from clouddigit.backends import hypervisor
from clouddigit.compute import chainlocks
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
    """A delete that failed leaves the VM stopped with the reason; what was already removed stays
    removed (the row is the truth: the domain is defined again from it when needed), and the owner
    deletes it again."""
    vm = VM.objects.filter(pk=vm_id).first()
    if vm is not None and vm.state == VM.State.DELETING:
        vm.transition(VM.State.STOPPED, last_error=f"Delete failed: {error}"[:2000])
        record(
            actor=None,
            action="compute.vm.delete",
            outcome=AuditEntry.Outcome.FAILED,
            target=Target.of(vm),
            message=error,
        )


def give_up_delete_vm(vm: VM, reason: str) -> None:
    fail_delete_vm(str(vm.pk), f"Gave up: {reason}")


# --- Volumes: attach to a running VM, detach, delete ------------------------------------------------


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
    """A detach goes back to `attached`, a delete to `available`, with the reason shown on the volume."""
    volume = Volume.objects.filter(pk=volume_id).first()
    if volume is None or not volume.in_transition:
        return
    back = Volume.State.ATTACHED if volume.state == Volume.State.DETACHING else Volume.State.AVAILABLE
    volume.transition(back, last_error=error[:2000], claimed_by="", lease_until=None)


def give_up_volume_operation(volume: Volume, reason: str) -> None:
    fail_volume_operation(str(volume.pk), f"Gave up: {reason}")


def finish_delete_volume(volume_id: str) -> None:
    """Worker side of delete: the volume's own file, then its row. The sealed layers under it belong to
    snapshots (kept, or merged away by their own deletes)."""
    volume = Volume.objects.filter(pk=volume_id).select_related("region").first()
    if volume is None or volume.state != Volume.State.DELETING:
        return
    with chainlocks.locked(volume, purpose=f"deleting volume {volume.name}"):
        operations.checkpoint(f"deleting file of {volume.name}")
        Path(volume.path).unlink(missing_ok=True)
        volume.delete()
