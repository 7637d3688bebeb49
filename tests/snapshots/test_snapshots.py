from __future__ import annotations

import hashlib
import random
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from clouddigit.backends import hypervisor, volumes
from clouddigit.compute import services as compute
from clouddigit.compute import work as compute_work
from clouddigit.compute.models import VM, Volume
from clouddigit.errors import Conflict, InvalidRequest, PermissionRefused
from snapshots import services, work
from snapshots.models import Restore, Snapshot
from tests.worker import created

MiB = 2**20
CLUSTER = 64 * 1024


def test_snapshot_then_restore_to_new_reads_back_what_was_there(run, operator, data_volume):
    snapshot = run(services.create_snapshot, actor=operator, volume=data_volume, name="before")
    snapshot.refresh_from_db()
    recorded = snapshot.disks.get().checksum
    assert snapshot.state == Snapshot.State.AVAILABLE and recorded
    data_volume.refresh_from_db()
    volumes.write_pattern(data_volume.path, 0, 2 * MiB, 0x22)  # the live volume moves on

    restore = run(services.restore_to_volume, actor=operator, snapshot=snapshot, name="data-01-restored")
    restore.refresh_from_db()
    assert restore.state == Restore.State.DONE and restore.seconds is not None
    assert volumes.checksum(restore.volume.path) == recorded
    assert volumes.checksum(data_volume.path) != recorded  # the original is untouched by the restore
    assert volumes.read_bytes(data_volume.path, 0, 2) == b"\x22\x22"


def test_creating_a_snapshot_is_an_overlay_on_the_chain(run, operator, data_volume):
    old_path = data_volume.path
    snapshot = run(services.create_snapshot, actor=operator, volume=data_volume)
    data_volume.refresh_from_db()
    layer = snapshot.disks.get().layer
    assert layer.path == old_path and data_volume.backing_layer == layer
    assert volumes.info(data_volume.path)["full-backing-filename"] == old_path
    assert volumes.info(data_volume.path)["actual-size"] < 1 * MiB  # metadata only


def test_rollback_reverts_and_keeps_a_safety_snapshot(run, operator, snap_admin, data_volume):
    snapshot = run(services.create_snapshot, actor=operator, volume=data_volume)
    snapshot.refresh_from_db()
    data_volume.refresh_from_db()
    volumes.write_pattern(data_volume.path, 0, 1 * MiB, 0x33)
    current = volumes.checksum(data_volume.path)

    with pytest.raises(InvalidRequest, match="not undoable") as refused:
        services.rollback(actor=snap_admin, snapshot=snapshot, confirm="yes")
    assert refused.value.field == "confirm"
    with pytest.raises(PermissionRefused):
        services.rollback(actor=operator, snapshot=snapshot, confirm="data-01")

    safety = run(services.rollback, actor=snap_admin, snapshot=snapshot, confirm="data-01")
    safety.refresh_from_db()
    data_volume.refresh_from_db()
    assert volumes.checksum(data_volume.path) == snapshot.disks.get().checksum
    assert safety.origin == Snapshot.Origin.SAFETY and safety.state == Snapshot.State.AVAILABLE
    assert safety.disks.get().checksum == current  # what roll-back replaced is still there for 24 hours
    assert timedelta(hours=23) < safety.expires_at - safety.created_at <= timedelta(hours=24, seconds=5)


def test_rollback_is_refused_while_the_vm_runs(run, snap_admin, make_vm, prod):
    vm = make_vm(prod, "db-01")
    snapshot = run(services.create_snapshot, actor=snap_admin, vm=vm)
    run(compute.start_vm, actor=None, vm=vm)
    with pytest.raises(Conflict, match="Stop the VM first"):
        services.rollback(actor=snap_admin, snapshot=snapshot, confirm="db-01")


class GuestViews:
    """The guest-visible checksum of snapshots' layers, read through qemu-img again only when a file of
    the layer's backing chain changed. What qemu reads through a chain is a function of the bytes of its
    files, so files with the same bytes give the same view; hashing a few small files is a fraction of
    the cost of reading the view through qemu-img (it was most of the test's time)."""

    def __init__(self):
        # layer path -> (SHA-256 of each file of its chain, guest checksum)
        self.known: dict[str, tuple[dict[str, str], str]] = {}

    def checksums(self, layers: dict[str, str]) -> dict[str, str]:
        """{key: guest checksum} for {key: layer path}, all read in the same state of the files."""
        digests: dict[str, str] = {}

        def digest(path: str) -> str:
            if path not in digests:
                digests[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            return digests[path]

        found = {}
        for key, path in layers.items():
            chain, checksum = self.known.get(path, ({}, None))
            if not chain or any(digest(file) != sha for file, sha in chain.items()):
                files = [layer["filename"] for layer in volumes.backing_chain(path)]
                checksum = volumes.checksum(path)
                self.known[path] = {file: digest(file) for file in files}, checksum
            found[key] = checksum
        return found


@pytest.mark.slow
def test_random_creates_writes_and_deletes_never_change_a_surviving_snapshot(run, operator, data_volume):
    rng = random.Random(20261126)
    alive: dict[str, str] = {}  # snapshot id -> checksum recorded when taken
    views = GuestViews()
    for step in range(200):
        data_volume.refresh_from_db()
        action = rng.choices(["create", "write", "delete"], weights=[3, 5, 2])[0]
        if action == "create" or not alive:
            snapshot = run(services.create_snapshot, actor=operator, volume=data_volume, name=f"s{step}")
            alive[str(snapshot.pk)] = Snapshot.objects.get(pk=snapshot.pk).disks.get().checksum
        elif action == "write":
            offset = rng.randrange(0, 16 * MiB - 256 * 1024, 4096)
            volumes.write_pattern(
                data_volume.path, offset, rng.choice([4096, 65536, 256 * 1024]), rng.randrange(256)
            )
        else:
            victim = rng.choice(sorted(alive))
            run(
                services.delete_snapshot,
                actor=operator,
                snapshot=(doomed := Snapshot.objects.get(pk=victim)),
                confirm=doomed.name,
            )
            del alive[victim]
            layers = {pk: Snapshot.objects.get(pk=pk).disks.get().layer.path for pk in alive}
            for snapshot_id, checksum in views.checksums(layers).items():
                assert checksum == alive[snapshot_id], f"step {step}: snapshot {snapshot_id} changed"
    live = volumes.checksum(Volume.objects.get(pk=data_volume.pk).path)
    for snapshot_id in sorted(alive):
        run(
            services.delete_snapshot,
            actor=operator,
            snapshot=(doomed := Snapshot.objects.get(pk=snapshot_id)),
            confirm=doomed.name,
        )
    data_volume.refresh_from_db()
    assert volumes.checksum(data_volume.path) == live
    assert data_volume.backing_layer is None  # every layer merged away: one standalone file again
    folder = Path(data_volume.path).parent
    assert sorted(p.name for p in folder.iterdir() if p.name != ".locks") == [Path(data_volume.path).name]
    assert list((folder / ".locks").iterdir()) == []  # no lock left of the chains merged away


def test_billed_size_starts_at_zero_and_grows_with_overwrites(run, operator, data_volume):
    snapshot = run(services.create_snapshot, actor=operator, volume=data_volume)
    snapshot.refresh_from_db()
    assert snapshot.billed_bytes == 0
    assert snapshot.reclaimable_bytes == 0

    data_volume.refresh_from_db()
    volumes.write_pattern(data_volume.path, 0, 1 * MiB, 0x44)  # overwrites 1 MiB the snapshot holds
    volumes.write_pattern(data_volume.path, 8 * MiB, 1 * MiB, 0x45)  # new data: not the snapshot's
    work.measure(str(snapshot.pk))
    snapshot.refresh_from_db()
    assert abs(snapshot.billed_bytes - 1 * MiB) <= CLUSTER
    assert abs(snapshot.reclaimable_bytes - 1 * MiB) <= CLUSTER
    assert snapshot.size_samples.count() == 2


def test_restored_volume_keeps_the_snapshot_layer_needed(run, operator, data_volume):
    snapshot = run(services.create_snapshot, actor=operator, volume=data_volume)
    run(services.restore_to_volume, actor=operator, snapshot=snapshot, name="copy")
    data_volume.refresh_from_db()
    volumes.write_pattern(data_volume.path, 0, 4 * MiB, 0x55)
    work.measure(str(snapshot.pk))
    snapshot.refresh_from_db()
    assert snapshot.reclaimable_bytes == 0  # the restored volume still reads all of it

    copy = Volume.objects.get(name="copy")
    before = volumes.checksum(copy.path)
    run(services.delete_snapshot, actor=operator, snapshot=snapshot, confirm=snapshot.name)
    copy.refresh_from_db()
    assert volumes.checksum(copy.path) == before and copy.backing_layer is None


@contextmanager
def _agent_not_answering(uri, spec, timeout_seconds):
    yield hypervisor.FreezeResult(frozen=False, consistency="crash", reason=hypervisor.AGENT_NOT_RESPONDING)


def test_app_consistent_without_an_agent_falls_back_and_says_so(run, operator, make_vm, prod, monkeypatch):
    vm = make_vm(prod, "web-02")
    run(compute.start_vm, actor=None, vm=vm)
    monkeypatch.setattr(hypervisor, "frozen", _agent_not_answering)

    snapshot = run(services.create_snapshot, actor=operator, vm=vm, consistency="application")
    snapshot.refresh_from_db()
    assert (snapshot.consistency_requested, snapshot.consistency_achieved) == ("application", "crash")
    assert snapshot.consistency_reason == "guest agent not responding"
    assert VM.objects.get(pk=vm.pk).guest_agent == VM.GuestAgent.NOT_RUNNING


def test_app_consistent_on_a_running_vm_freezes_and_always_thaws(run, operator, make_vm, prod, monkeypatch):
    vm = make_vm(prod, "db-01")
    run(compute.start_vm, actor=None, vm=vm)
    vm.refresh_from_db()
    snapshot = run(services.create_snapshot, actor=operator, vm=vm)
    snapshot.refresh_from_db()
    assert snapshot.consistency_achieved == "application"
    domain = hypervisor.ensure_domain(vm.host.libvirt_uri, compute_work.domain_spec(vm))
    assert domain.fsThaw() == 0  # nothing left frozen

    def broken_seal(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("snapshots.chains.seal_active", broken_seal)
    with pytest.raises(RuntimeError, match="disk full"):  # the worker's task fails ...
        run(services.create_snapshot, actor=operator, vm=vm)
    failed = Snapshot.objects.get(state=Snapshot.State.ERROR)  # ... and the row says why
    assert "disk full" in failed.last_error
    assert domain.fsThaw() == 0  # thawed although sealing failed inside the freeze


def test_vm_snapshot_records_the_definition_and_restores_to_a_running_vm(run, operator, make_vm, prod, dha):
    vm = make_vm(prod, "db-01", tags={"env": "prod"})
    data = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="db-01-data", size_bytes=8 * MiB)
    )
    compute.attach_volume(actor=None, volume=data, vm=vm, device="vdb")
    volumes.write_pattern(data.path, 0, MiB, 0x66)
    snapshot = run(services.create_snapshot, actor=operator, vm=vm)
    snapshot.refresh_from_db()
    assert snapshot.kind == "vm" and snapshot.disks.count() == 2
    assert snapshot.vm_definition["flavor"] == "std-2x4" and "<domain" in snapshot.vm_definition["domain_xml"]

    restore = run(
        services.restore_to_vm, actor=operator, snapshot=snapshot, name="db-01-restored", vpc="sandbox-vpc"
    )
    restore.refresh_from_db()
    assert restore.state == Restore.State.DONE and restore.vm.state == VM.State.RUNNING
    restored = {v.device: v for v in restore.vm.volumes.all()}
    assert set(restored) == {"vda", "vdb"} and restore.vm.vpc == "sandbox-vpc"
    assert volumes.checksum(restored["vdb"].path) == snapshot.disks.get(device="vdb").checksum


def test_restoring_bare_metal_onto_a_vm_flavor_warns_first(run, operator, make_vm, prod):
    vm = make_vm(prod, "batch-01", flavor="bm-c1")
    snapshot = run(services.create_snapshot, actor=operator, vm=vm)
    with pytest.raises(services.RestoreNeedsConfirmation, match="Kernel panic on init"):
        services.restore_to_vm(actor=operator, snapshot=snapshot, name="b2", vpc="v", flavor="std-2x4")
    assert not VM.objects.filter(name="b2").exists()
    restore = run(
        services.restore_to_vm,
        actor=operator,
        snapshot=snapshot,
        name="b2",
        vpc="v",
        flavor="std-2x4",
        acknowledge_warnings=True,
    )
    assert "Kernel panic" in restore.warnings[0]


def test_a_snapshot_being_restored_cannot_be_deleted(operator, run, data_volume):
    snapshot = run(services.create_snapshot, actor=operator, volume=data_volume)
    snapshot.refresh_from_db()
    services.restore_to_volume(actor=operator, snapshot=snapshot, name="slow-restore")  # task not run yet
    with pytest.raises(Conflict, match="a restore to slow-restore .* is reading it"):
        services.delete_snapshot(actor=operator, snapshot=snapshot, confirm=snapshot.name)


def test_the_rolling_limit_rotates_policy_snapshots_but_never_manual_ones(
    run, operator, snap_admin, data_volume
):
    services.raise_limit(actor=snap_admin, volume=data_volume, limit=2, ticket="OPS-1")
    first = run(
        services.create_snapshot, actor=operator, volume=data_volume, origin="policy", policy_name="p"
    )
    run(services.create_snapshot, actor=operator, volume=data_volume, name="manual-1")
    run(services.create_snapshot, actor=operator, volume=data_volume, name="manual-2")
    assert not Snapshot.objects.filter(pk=first.pk).exists()  # rotated out
    with pytest.raises(services.QuotaExceeded, match="none of them was created by a policy"):
        services.create_snapshot(actor=operator, volume=data_volume, name="manual-3")
    with pytest.raises(InvalidRequest, match="ticket"):
        services.raise_limit(actor=snap_admin, volume=data_volume, limit=5, ticket=" ")
    with pytest.raises(PermissionRefused):
        services.raise_limit(actor=operator, volume=data_volume, limit=5, ticket="OPS-2")


def test_an_outsider_cannot_reach_another_accounts_snapshot(run, operator, charlie, data_volume):
    snapshot = run(services.create_snapshot, actor=operator, volume=data_volume)
    assert not Snapshot.objects.visible_to(charlie).exists()
    for attempt in (
        lambda: services.delete_snapshot(actor=charlie, snapshot=snapshot, confirm=snapshot.name),
        lambda: services.restore_to_volume(actor=charlie, snapshot=snapshot, name="stolen"),
    ):
        with pytest.raises(PermissionRefused):
            attempt()
