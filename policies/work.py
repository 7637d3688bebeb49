"""The worker side of restore drills: `perform` runs a RUNNING drill, called by its task (`tasks.py`)
under the drill's claim on the region's hypervisor queue.

It restores the drill's snapshot to a sandbox VM (through the snapshots app's restore service, as a user
would), checks that it boots and that every volume reads back the snapshot's checksum, records the result,
then removes the sandbox VM. It never imports this app's request side (`drills`) or tasks:
services -> tasks -> work (docs/decisions.md).
"""

from __future__ import annotations

from django.utils import timezone

from clouddigit import operations
from clouddigit.backends import hypervisor, volumes
from clouddigit.compute import work as compute
from clouddigit.compute.models import VM
from clouddigit.errors import Conflict
from clouddigit.names import derived_name
from clouddigit.statemachine import TransitionRefused
from policies.models import Drill
from snapshots import chains
from snapshots import services as snapshot_services
from snapshots import work as snapshot_work
from snapshots.models import Restore

SANDBOX_VPC = "sandbox-vpc"
RESTORE_WAIT_SECONDS = 10


def perform(drill_id: str) -> None:
    """Restore, smoke-check, record, clean up. A failure is recorded, never left running.

    Every step is recorded on the drill before the next one starts (its restore, then its checks), so a
    drill whose worker died goes on with the same sandbox VM instead of starting another."""
    drill = Drill.objects.select_related("snapshot", "restore__vm__host").get(pk=drill_id)
    restore = drill.restore
    try:
        if restore is None:
            restore = _start_restore(drill)
        _finish(restore)
        restored = restore.vm
        if restored is not None:
            checks = _smoke_checks(drill, restored)
            Drill.objects.filter(pk=drill.pk).update(checks=checks)
            operations.checkpoint("drill checked; removing the sandbox VM")
            compute.destroy_vm(str(restored.pk))
        else:
            checks = Drill.objects.get(pk=drill.pk).checks  # checked before the VM was removed
        ok = bool(checks) and all(check["ok"] for check in checks)
        drill.transition(
            Drill.State.PASSED if ok else Drill.State.FAILED,
            checks=checks,
            seconds=restore.seconds,
            error="" if checks else "the sandbox VM was gone before it was checked; run the drill again",
            finished_at=timezone.now(),
        )
    except operations.Waiting:
        raise
    except Exception as error:  # a drill reports every failure instead of raising it into the worker
        drill.transition(Drill.State.FAILED, error=str(error)[:2000], finished_at=timezone.now())
        if restore is not None and restore.vm_id is not None:
            compute.destroy_vm(str(restore.vm_id))


def _start_restore(drill: Drill) -> Restore:
    if drill.snapshot is None:
        raise Conflict(f"The snapshot {drill.snapshot_name} was deleted before the drill restored it.")
    stamp = timezone.now().strftime("%Y%m%d%H%M%S")
    restore = snapshot_services.restore_to_vm(
        actor=None,
        snapshot=drill.snapshot,
        name=derived_name(drill.vm_name, f"-drill-{stamp}"),
        vpc=SANDBOX_VPC,
        acknowledge_warnings=True,
    )
    Drill.objects.filter(pk=drill.pk).update(restore=restore)
    operations.checkpoint("drill restore started")
    return restore


def _finish(restore: Restore) -> None:
    """Finish the restore here, under its claim (its own queued task then finds nothing to do)."""
    operations.run(
        Restore,
        restore.pk,
        state=Restore.State.RESTORING,
        step=snapshot_work.finish_restore,
        fail=snapshot_work.fail_restore,
    )
    restore.refresh_from_db()
    if restore.state == Restore.State.RESTORING:
        raise operations.Waiting(
            f"the restore {restore} is being finished by another worker", seconds=RESTORE_WAIT_SECONDS
        )
    if restore.state == Restore.State.FAILED:
        raise Conflict(f"The restore failed: {restore.last_error}")


def _smoke_checks(drill: Drill, vm: VM) -> list[dict]:
    recorded = Drill.objects.get(pk=drill.pk).checks
    uri, spec = vm.host.libvirt_uri, compute.domain_spec(vm)
    if recorded:  # resumed after the boot check: the domain may already be off for the volume checks
        checks = recorded[:1]
    else:
        state = hypervisor.state(uri, spec)
        checks = [
            {"check": "boots on the hypervisor", "ok": state == "running", "detail": f"domain is {state}"}
        ]
        Drill.objects.filter(pk=drill.pk).update(checks=checks)
    hypervisor.remove(uri, spec)  # powered off first: a running qemu holds its disks' files
    gone = Conflict(
        f"The snapshot {drill.snapshot_name} was deleted before the drill checked its disks; "
        "run a new drill (it restores the VM's latest snapshot)."
    )
    if drill.snapshot is None:
        raise gone
    expected = {disk.device: disk for disk in drill.snapshot.disks.select_related("layer")}
    for volume in vm.volumes.order_by("device"):
        disk = expected.get(volume.device)
        # A merge or measurement may work on the same chain meanwhile: read it under its shared lock.
        with chains.locked(volume, purpose=f"drill checking {volume.name}", shared=True):
            if disk is not None and disk.checksum:
                want = disk.checksum
            elif disk is not None and disk.layer is not None:
                want = volumes.checksum(disk.layer.path)
            else:  # its rows or its layer went with the snapshot meanwhile
                raise gone
            got = volumes.checksum(volume.path)
        checks.append(
            {
                "check": f"{volume.device} reads back the snapshot",
                "ok": got == want,
                "detail": f"sha256 {got[:12]}… (snapshot {want[:12]}…)",
            }
        )
    return checks


def give_up(drill: Drill, reason: str) -> None:
    """The reconciler's last word on a drill whose worker kept dying (a drill that has finished
    meanwhile is left as it is)."""
    try:
        drill.transition(Drill.State.FAILED, error=f"Gave up: {reason}"[:2000], finished_at=timezone.now())
    except TransitionRefused:
        return
