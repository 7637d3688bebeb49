"""Restore drills: "the first time you restore from a snapshot should not be during an incident".

A drill restores the latest VM snapshot of a VM to a new VM in a sandbox VPC (the same restore-to-new
service as `clouddigit compute vm restore`), checks that it boots on the hypervisor and that every
volume reads back the snapshot's checksum, records the time to restore, then removes the drill VM.

This is the request side (run, retry, delete, the quarterly schedule); the drill itself runs in
`work.py`, queued through `tasks.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings

from clouddigit import operations
from clouddigit.access import actor_name, require
from clouddigit.audit.log import audited
from clouddigit.compute.models import VM
from clouddigit.compute.permissions import Perm
from clouddigit.errors import Conflict
from clouddigit.queueing import enqueue, hypervisor_queue
from policies import tasks
from policies.engine import in_scope
from policies.models import Drill, Policy
from snapshots.models import Snapshot

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
    if drill.state == Drill.State.FAILED:
        drill.transition(
            Drill.State.RUNNING,
            error="",
            finished_at=None,
            restore=None,
            checks=[],
            seconds=None,
            **operations.restarted(),
        )
    elif drill.state == Drill.State.RUNNING:
        Drill.objects.filter(pk=drill.pk).update(**operations.restarted())
    else:
        raise Conflict(f"The {drill} passed: there is nothing to retry.")
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
