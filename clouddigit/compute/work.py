"""The worker side of the compute inventory: a VM's domain on its host, made to match its row.

Tasks (`clouddigit/compute/tasks.py`) call these on the region's hypervisor queue; other apps' worker
steps call them too (a restore starts its VM, a drill removes its sandbox VM). Nothing here imports the
request side (`services`) or queues a task: services -> tasks -> work (docs/decisions.md).
"""

from __future__ import annotations

from pathlib import Path

from clouddigit.audit.log import Target, record
from clouddigit.audit.models import AuditEntry
from clouddigit.backends import hypervisor
from clouddigit.compute.models import VM


def domain_spec(vm: VM) -> hypervisor.DomainSpec:
    """What the hypervisor should run for this row: the database is the truth."""
    disks = [
        hypervisor.DiskSpec(
            path=volume.path,
            target_dev=volume.device,
            bus="virtio" if volume.device.startswith("vd") else "scsi",
            fmt="qcow2",
            boot=volume.bootable,
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
    """Worker side of removing a VM: its domain off the host, its volumes' files and rows, then the VM.
    Used by restore drills to clean up; the sealed layers its volumes backed onto belong to snapshots."""
    vm = VM.objects.select_related("host", "project__account").get(pk=vm_id)
    hypervisor.remove(vm.host.libvirt_uri, domain_spec(vm))
    for volume in vm.volumes.all():
        Path(volume.path).unlink(missing_ok=True)
        volume.delete()
    vm.delete()
