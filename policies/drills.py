"""Restore drills: "the first time you restore from a snapshot should not be during an incident".

A drill restores the latest VM snapshot of a VM to a new VM in a sandbox VPC (the same restore-to-new
service as `clouddigit compute vm restore`), checks that it boots on the hypervisor and that every
volume reads back the snapshot's checksum, records the time to restore, then removes the drill VM.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from clouddigit.access import require
from clouddigit.audit.log import audited
from clouddigit.backends import hypervisor, volumes
from clouddigit.compute import services as compute
from clouddigit.compute.models import VM
from clouddigit.errors import Conflict
from clouddigit.queueing import enqueue, hypervisor_queue
from policies import tasks
from policies.engine import in_scope
from policies.models import Drill, Policy
from snapshots import services as snapshots
from snapshots.models import Snapshot

SANDBOX_VPC = "sandbox-vpc"
EVERY = timedelta(days=91)  # quarterly


def latest_vm_snapshot(vm: VM) -> Snapshot | None:
    return (
        Snapshot.objects.filter(vm=vm, kind=Snapshot.Kind.VM, state=Snapshot.State.AVAILABLE)
        .order_by("-created_at")
        .first()
    )


@audited("policy.drill", target="vm")
def run_drill(*, actor, vm: VM, policy: Policy | None = None) -> Drill:
    require(actor, "restore_snapshots", vm.project, "run restore drills")
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
        requested_by=actor.get_username() if actor else "system",
    )
    enqueue(tasks.drill, str(drill.pk), queue=hypervisor_queue(vm.region_id))
    return drill


def perform(drill_id: str) -> None:
    """Worker side: restore, smoke-check, record, clean up. A failure is recorded, never left running."""
    drill = Drill.objects.select_related("snapshot").get(pk=drill_id)
    if drill.state != Drill.State.RUNNING:
        return
    stamp = timezone.now().strftime("%Y%m%d%H%M%S")
    restored = None
    try:
        restore = snapshots.restore_to_vm(
            actor=None,
            snapshot=drill.snapshot,
            name=compute.derived_name(drill.vm_name, f"-drill-{stamp}"),
            vpc=SANDBOX_VPC,
            acknowledge_warnings=True,
        )
        snapshots.finish_restore(str(restore.pk))
        restore.refresh_from_db()
        restored = restore.vm
        checks = _smoke_checks(drill, restored)
        ok = all(check["ok"] for check in checks)
        Drill.objects.filter(pk=drill.pk).update(
            state=Drill.State.PASSED if ok else Drill.State.FAILED,
            checks=checks,
            seconds=restore.seconds,
            finished_at=timezone.now(),
        )
    except Exception as error:  # a drill reports every failure instead of raising it into the worker
        Drill.objects.filter(pk=drill.pk).update(
            state=Drill.State.FAILED, error=str(error)[:2000], finished_at=timezone.now()
        )
    finally:
        if restored is not None:
            compute.destroy_vm(str(restored.pk))


def _smoke_checks(drill: Drill, vm: VM) -> list[dict]:
    uri, spec = vm.host.libvirt_uri, compute.domain_spec(vm)
    state = hypervisor.state(uri, spec)
    checks = [{"check": "boots on the hypervisor", "ok": state == "running", "detail": f"domain is {state}"}]
    hypervisor.remove(uri, spec)  # powered off first: a running qemu holds its disks' files
    expected = {disk.device: disk for disk in drill.snapshot.disks.select_related("layer")}
    for volume in vm.volumes.order_by("device"):
        disk = expected.get(volume.device)
        want = disk.checksum or volumes.checksum(disk.layer.path)
        got = volumes.checksum(volume.path)
        checks.append(
            {
                "check": f"{volume.device} reads back the snapshot",
                "ok": got == want,
                "detail": f"sha256 {got[:12]}… (snapshot {want[:12]}…)",
            }
        )
    return checks


def due(now: datetime) -> None:
    """Daily (beat): every policy whose last drill is older than a quarter drills the VM in its scope
    that was drilled least recently (and has a VM snapshot)."""
    for policy in Policy.objects.select_related("project"):
        last = policy.drills.order_by("-started_at").first()
        if last is not None and now - last.started_at < EVERY:
            continue
        drilled = {d.vm_id: d.started_at for d in policy.drills.all()}
        candidates = [vm for vm in in_scope(policy) if latest_vm_snapshot(vm) is not None]
        if candidates:
            vm = min(
                candidates, key=lambda each: drilled.get(each.pk) or datetime.min.replace(tzinfo=now.tzinfo)
            )
            run_drill(actor=None, vm=vm, policy=policy)
