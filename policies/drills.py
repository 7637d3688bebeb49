"""Restore drills: "the first time you restore from a snapshot should not be during an incident".

A drill restores the latest VM snapshot of a VM to a new VM in a sandbox VPC (the same restore-to-new
service as `clouddigit compute vm restore`), checks that it boots on the hypervisor and that every
volume reads back the snapshot's checksum, records the time to restore, then removes the drill VM.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from clouddigit import operations
from clouddigit.access import actor_name, require
from clouddigit.audit.log import audited
from clouddigit.backends import hypervisor, volumes
from clouddigit.compute import services as compute
from clouddigit.compute.models import VM
from clouddigit.compute.permissions import Perm
from clouddigit.errors import Conflict
from clouddigit.queueing import enqueue, hypervisor_queue
from policies import tasks
from policies.engine import in_scope
from policies.models import Drill, Policy
from snapshots import chains
from snapshots import services as snapshots
from snapshots.models import Restore, Snapshot

SANDBOX_VPC = "sandbox-vpc"
EVERY = timedelta(days=91)  # quarterly


def latest_vm_snapshot(vm: VM) -> Snapshot | None:
    return (
        Snapshot.objects.filter(vm=vm, kind=Snapshot.Kind.VM, state=Snapshot.State.AVAILABLE)
        .order_by("-created_at")
        .first()
    )


def vm_to_drill(policy: Policy, asked: str | None = None) -> VM | None:
    """The VM a drill of `policy` restores: the one `asked` for (its id) when it is in the policy's scope
    and has a VM snapshot, else such a VM drilled least recently; None when no VM in scope has one."""
    vms = [vm for vm in in_scope(policy) if latest_vm_snapshot(vm) is not None]
    chosen = next((vm for vm in vms if str(vm.pk) == asked), None)
    if chosen is None and vms:
        drilled = {d.vm_id: d.started_at for d in policy.drills.all()}
        never = datetime.min.replace(tzinfo=UTC)
        chosen = min(vms, key=lambda vm: drilled.get(vm.pk) or never)
    return chosen


@audited("policy.drill", target="vm")
def run_drill(*, actor, vm: VM, policy: Policy | None = None) -> Drill:
    require(actor, Perm.RESTORE_SNAPSHOTS, vm.project, "run restore drills")
    snapshot = latest_vm_snapshot(vm)
    if snapshot is None:
        raise Conflict(f"VM {vm.name} has no available VM snapshot to drill with: take one first.")
    drill = Drill.objects.create(
        policy=policy,
        project=vm.project,
        vm=vm,
        vm_name=vm.name,
        snapshot=snapshot,
        snapshot_name=snapshot.name,
        requested_by=actor_name(actor),
        **operations.queued(),
    )
    enqueue(tasks.drill, str(drill.pk), queue=hypervisor_queue(vm.region_id))
    return drill


class DrillWaiting(Exception):
    """Another worker is finishing the drill's restore; the drill task looks again later."""


def perform(drill_id: str) -> None:
    """Worker side: restore, smoke-check, record, clean up. A failure is recorded, never left running.

    Every step is recorded on the drill before the next one starts (its restore, then its checks), so a
    drill whose worker died goes on with the same sandbox VM instead of starting another."""
    drill = Drill.objects.select_related("snapshot", "restore__vm__host").get(pk=drill_id)
    if drill.state != Drill.State.RUNNING:
        return
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
        Drill.objects.filter(pk=drill.pk).update(
            state=Drill.State.PASSED if ok else Drill.State.FAILED,
            checks=checks,
            seconds=restore.seconds,
            error="" if checks else "the sandbox VM was gone before it was checked; run the drill again",
            finished_at=timezone.now(),
        )
    except DrillWaiting:
        raise
    except Exception as error:  # a drill reports every failure instead of raising it into the worker
        Drill.objects.filter(pk=drill.pk).update(
            state=Drill.State.FAILED, error=str(error)[:2000], finished_at=timezone.now()
        )
        if restore is not None and restore.vm_id is not None:
            compute.destroy_vm(str(restore.vm_id))


def _start_restore(drill: Drill) -> Restore:
    if drill.snapshot is None:
        raise Conflict(f"The snapshot {drill.snapshot_name} was deleted before the drill restored it.")
    stamp = timezone.now().strftime("%Y%m%d%H%M%S")
    restore = snapshots.restore_to_vm(
        actor=None,
        snapshot=drill.snapshot,
        name=compute.derived_name(drill.vm_name, f"-drill-{stamp}"),
        vpc=SANDBOX_VPC,
        acknowledge_warnings=True,
    )
    Drill.objects.filter(pk=drill.pk).update(restore=restore)
    operations.checkpoint("drill restore started")
    return restore


def _finish(restore: Restore) -> None:
    """Finish the restore here, under its claim (its own queued task then finds nothing to do)."""
    with operations.claimed(Restore, restore.pk) as claim:
        if claim:
            try:
                snapshots.finish_restore(str(restore.pk))
            except Exception as error:
                snapshots.fail_restore(str(restore.pk), str(error))
                raise
    restore.refresh_from_db()
    if restore.state == Restore.State.RESTORING:
        raise DrillWaiting(f"the restore {restore} is being finished by another worker")
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
    Drill.objects.filter(pk=drill.pk, state=Drill.State.RUNNING).update(
        state=Drill.State.FAILED, error=f"Gave up: {reason}"[:2000], finished_at=timezone.now()
    )


def resume(drill: Drill) -> None:
    enqueue(tasks.drill, str(drill.pk), queue=hypervisor_queue(_region(drill)))


def _region(drill: Drill) -> str:
    made = drill.vm or drill.snapshot
    return made.region_id if made else settings.DEFAULT_REGION


@audited("policy.drill.retry", target="drill")
def retry_drill(*, actor, drill: Drill) -> Drill:
    """Run a failed or interrupted drill again (a failed one from a fresh restore of its snapshot)."""
    require(actor, Perm.RESTORE_SNAPSHOTS, drill.project, "run restore drills")
    if drill.worker_on_it:
        raise Conflict(f"The {drill} is being run now; retry it if it stops making progress.")
    if drill.state == Drill.State.PASSED:
        raise Conflict(f"The {drill} passed: there is nothing to retry.")
    fields = {**operations.restarted(), "state": Drill.State.RUNNING, "error": "", "finished_at": None}
    if drill.state == Drill.State.FAILED:
        fields.update(restore=None, checks=[], seconds=None)
    Drill.objects.filter(pk=drill.pk).update(**fields)
    drill.refresh_from_db()
    resume(drill)
    return drill


@audited("policy.drill.delete", target="drill")
def delete_drill(*, actor, drill: Drill) -> None:
    """Remove a failed drill from the history (its sandbox VM is already gone)."""
    require(actor, Perm.RESTORE_SNAPSHOTS, drill.project, "delete restore drills")
    if drill.state != Drill.State.FAILED:
        raise Conflict(f"The {drill} is {drill.state}; only a failed drill is deleted.")
    drill.delete()


def due(now: datetime) -> None:
    """Daily (beat): every policy whose last drill is older than a quarter drills the VM in its scope
    that was drilled least recently (and has a VM snapshot)."""
    for policy in Policy.objects.select_related("project"):
        last = policy.drills.order_by("-started_at").first()
        if last is not None and now - last.started_at < EVERY:
            continue
        vm = vm_to_drill(policy)
        if vm is not None:
            run_drill(actor=None, vm=vm, policy=policy)
