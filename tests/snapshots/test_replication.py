"""Cross-region snapshot copies against a real S3 server (SeaweedFS, one bucket per region) and real
qemu-img: incremental, verified, resumable, restorable in the target region."""

from __future__ import annotations

import subprocess

import pytest

from clouddigit.audit.models import AuditEntry
from clouddigit.backends import volumes
from clouddigit.compute import services as compute
from clouddigit.compute.models import VM, Volume
from clouddigit.errors import Conflict, InvalidRequest, PermissionRefused
from iam.services import grant_role
from snapshots import replication, replication_work, services
from snapshots.models import Chunk, ChunkRef, Restore, Snapshot, SnapshotDisk
from tests.worker import created

MiB = 2**20


@pytest.fixture
def stores(image_stores, settings):
    settings.REPLICATION_CHUNK_GRACE_SECONDS = 0
    return image_stores


def _copy(run, actor, snapshot, **kwargs):
    copy = run(replication.copy_snapshot, actor=actor, snapshot=snapshot, target_region="bd-ctg-1", **kwargs)
    copy.refresh_from_db()
    return copy


def _snap(run, actor, volume, name):
    snapshot = run(services.create_snapshot, actor=actor, volume=volume, name=name)
    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.AVAILABLE, snapshot.last_error
    return snapshot


def test_copy_lands_in_the_target_and_restores_byte_identical(run, operator, data_volume, stores, ctg):
    snapshot = _snap(run, operator, data_volume, "before")
    copy = _copy(run, operator, snapshot, name="before-dr")
    assert copy.state == Snapshot.State.AVAILABLE, copy.last_error
    assert copy.region_id == "bd-ctg-1" and copy.source_snapshot == snapshot and copy.name == "before-dr"
    assert copy.bytes_total == 4 * MiB  # the written data; the 12 MiB never written are not sent
    assert copy.bytes_sent == 4 * MiB  # 0x11 * 4 MiB: one chunk content, sent once per key ...
    disk = copy.disks.get()
    assert disk.layer.region_id == "bd-ctg-1" and disk.layer.parent is None
    assert disk.layer.path.startswith(ctg.volume_dir)
    assert disk.checksum == snapshot.disks.get().checksum
    manifest_keys = stores["bd-ctg-1"].list("manifests/")
    assert manifest_keys == [disk.manifest_key]

    restore = run(services.restore_to_volume, actor=operator, snapshot=copy, name="data-01-dr")
    restore.refresh_from_db()
    assert restore.state == Restore.State.DONE and restore.volume.region_id == "bd-ctg-1"
    assert volumes.checksum(restore.volume.path) == snapshot.disks.get().checksum


def test_a_second_copy_sends_only_what_changed(run, operator, data_volume, stores):
    data_volume.refresh_from_db()
    for offset in range(0, 16 * MiB, MiB):  # 16 different MiB of data
        volumes.write_pattern(data_volume.path, offset, MiB, offset // MiB + 1)
    first = _copy(run, operator, _snap(run, operator, data_volume, "one"))
    data_volume.refresh_from_db()
    changed = 4 * MiB
    volumes.write_pattern(data_volume.path, 8 * MiB, changed, 0xEE)  # a quarter of the volume is rewritten
    second = _copy(run, operator, _snap(run, operator, data_volume, "two"))
    # Only the layers written since the first copy's source are read: what changed is all there is to send.
    assert first.bytes_sent == 16 * MiB and second.bytes_total == changed
    assert second.state == Snapshot.State.AVAILABLE
    assert second.bytes_sent <= 1.1 * changed
    print(f"replication bytes_sent first={first.bytes_sent} second={second.bytes_sent} changed={changed}")

    data_volume.refresh_from_db()
    volumes.write_pattern(data_volume.path, 5 * MiB, MiB, 0xEF)  # less than a chunk: only it goes
    zeroes = ["qemu-io", "-f", "qcow2", "-c", f"write -z {12 * MiB} {MiB}", data_volume.path]
    subprocess.run(zeroes, check=True, capture_output=True)  # zero clusters: sent as a range, not bytes
    third = _copy(run, operator, _snap(run, operator, data_volume, "three"))
    assert third.state == Snapshot.State.AVAILABLE  # landing checked the whole disk's checksum
    assert third.bytes_sent == MiB
    assert volumes.checksum(third.disks.get().layer.path) == volumes.checksum(data_volume.path)


def test_deleting_a_copy_frees_only_chunks_no_other_copy_uses(run, operator, snap_admin, data_volume, stores):
    data_volume.refresh_from_db()
    volumes.write_pattern(data_volume.path, 8 * MiB, MiB, 0x42)
    first = _copy(run, operator, _snap(run, operator, data_volume, "one"))
    data_volume.refresh_from_db()
    volumes.write_pattern(data_volume.path, 12 * MiB, MiB, 0x43)
    second = _copy(run, operator, _snap(run, operator, data_volume, "two"))
    store = stores["bd-ctg-1"]
    assert len(store.list("chunks/")) == 3 and Chunk.objects.count() == 3

    run(services.delete_snapshot, actor=snap_admin, snapshot=second, confirm=second.name)
    assert not Snapshot.objects.filter(pk=second.pk).exists()
    assert replication_work.collect() == 1  # the chunk only the second copy had
    assert len(store.list("chunks/")) == 2 and ChunkRef.objects.count() == 2
    restore = run(services.restore_to_volume, actor=operator, snapshot=first, name="still-there")
    assert volumes.checksum(restore.volume.path) == first.disks.get().checksum


def test_a_reference_taken_meanwhile_keeps_the_chunk(run, operator, snap_admin, data_volume, stores):
    copy = _copy(run, operator, _snap(run, operator, data_volume, "one"))
    chunk = Chunk.objects.get()
    run(services.delete_snapshot, actor=snap_admin, snapshot=copy, confirm=copy.name)
    again = _copy(run, operator, Snapshot.objects.get(name="one"))  # references it before the collector
    assert again.bytes_sent == 0  # the object was still there
    assert replication_work.collect() == 0
    assert stores["bd-ctg-1"].head(chunk.key) is not None


def test_the_source_is_held_while_it_is_copied(
    operator, snap_admin, data_volume, stores, run, django_capture_on_commit_callbacks
):
    snapshot = _snap(run, operator, data_volume, "held")
    with django_capture_on_commit_callbacks(execute=False):  # queued, not run: the copy stays Creating
        copy = replication.copy_snapshot(actor=operator, snapshot=snapshot, target_region="bd-ctg-1")
    with pytest.raises(Conflict, match=f"being copied to bd-ctg-1 as {copy.name}"):
        services.delete_snapshot(actor=snap_admin, snapshot=snapshot, confirm=snapshot.name)
    with pytest.raises(Conflict, match="being copied to bd-ctg-1"):
        services.rollback(actor=snap_admin, snapshot=snapshot, confirm="data-01")
    with pytest.raises(Conflict, match="only an available snapshot can be restored"):
        services.restore_to_volume(actor=operator, snapshot=copy, name="too-early")


def test_a_corrupted_chunk_fails_the_copy_naming_it(run, operator, data_volume, stores):
    snapshot = _snap(run, operator, data_volume, "one")
    sent = _copy(run, operator, snapshot)
    chunk = Chunk.objects.get()
    stores["bd-ctg-1"].put_bytes(chunk.key, b"rotten" * 10)  # the target's object no longer matches
    redo = _copy(run, operator, snapshot, name="again")
    assert redo.state == Snapshot.State.AVAILABLE and redo.bytes_sent == 4 * MiB  # HEAD saw the wrong digest
    # The object goes bad in the target after it was sent: landing (again) refuses it, naming it.
    stores["bd-ctg-1"].put_bytes(chunk.key, b"rotten" * 10)
    SnapshotDisk.objects.filter(snapshot=sent).update(layer=None)
    Snapshot.objects.filter(pk=sent.pk).update(state=Snapshot.State.CREATING, completed_at=None)
    with pytest.raises(replication_work.ChunkMismatch, match=f"Chunk {chunk.key} .offset 0 of data-01"):
        replication_work.land(str(sent.pk))


@pytest.fixture
def viewer(django_user_model, prod):
    django_user_model.objects.create_user("vera")
    grant_role(actor=None, role="snapshot.viewer", account=prod.account, project=prod, username="vera")
    return django_user_model.objects.get(username="vera")


def test_bad_input_writes_nothing(run, operator, data_volume, stores, viewer):
    snapshot = _snap(run, operator, data_volume, "one")
    before = Snapshot.objects.count()
    with pytest.raises(InvalidRequest, match="already in bd-dha-1"):
        replication.copy_snapshot(actor=operator, snapshot=snapshot, target_region="bd-dha-1")
    with pytest.raises(
        InvalidRequest, match="Unknown region 'bd-xyz-9'; the regions are: bd-ctg-1, bd-dha-1"
    ):
        replication.copy_snapshot(actor=operator, snapshot=snapshot, target_region="bd-xyz-9")
    with pytest.raises(InvalidRequest, match="is in bd-dha-1, not bd-ctg-1"):
        replication.copy_snapshot(
            actor=operator, snapshot=snapshot, source_region="bd-ctg-1", target_region="bd-ctg-1"
        )
    Snapshot.objects.filter(pk=snapshot.pk).update(state=Snapshot.State.ERROR)
    snapshot.refresh_from_db()
    with pytest.raises(Conflict, match="only an available snapshot can be copied"):
        replication.copy_snapshot(actor=operator, snapshot=snapshot, target_region="bd-ctg-1")
    Snapshot.objects.filter(pk=snapshot.pk).update(state=Snapshot.State.AVAILABLE)
    with pytest.raises(PermissionRefused):
        replication.copy_snapshot(actor=viewer, snapshot=snapshot, target_region="bd-ctg-1")
    assert Snapshot.objects.count() == before
    refused = AuditEntry.objects.filter(action="snapshot.copy").latest("at")
    assert refused.outcome != "success"


def test_a_copy_of_a_copy_back_to_its_origin_is_incremental(run, operator, data_volume, stores):
    snapshot = _snap(run, operator, data_volume, "one")
    there = _copy(run, operator, snapshot)
    back = run(
        replication.copy_snapshot, actor=operator, snapshot=there, target_region="bd-dha-1", name="back"
    )
    back.refresh_from_db()
    assert back.state == Snapshot.State.AVAILABLE and back.region_id == "bd-dha-1"
    assert back.bytes_sent == 4 * MiB  # the origin's store had none of it yet
    again = run(
        replication.copy_snapshot, actor=operator, snapshot=there, target_region="bd-dha-1", name="again"
    )
    again.refresh_from_db()
    assert again.bytes_sent == 0  # everything already there
    assert back.disks.get().checksum == snapshot.disks.get().checksum


def test_a_vm_snapshot_copies_every_disk_and_restores_to_a_vm_in_the_target(
    run, operator, make_vm, prod, stores
):
    vm = make_vm(prod, "db-01")
    data = created(
        compute.create_volume(
            actor=None, project=prod, region=vm.region, name="db-01-data", size_bytes=16 * MiB
        )
    )
    compute.attach_volume(actor=None, volume=data, vm=vm, device="vdb")
    volumes.write_pattern(Volume.objects.get(pk=data.pk).path, 2 * MiB, 3 * MiB, 0x77)
    volumes.write_pattern(vm.volumes.get(device="vda").path, 0, MiB, 0x78)
    snapshot = run(
        services.create_snapshot, actor=operator, vm=VM.objects.get(pk=vm.pk), name="db-01-nightly"
    )
    copy = _copy(run, operator, snapshot)
    assert copy.state == Snapshot.State.AVAILABLE, copy.last_error
    assert copy.kind == Snapshot.Kind.VM and copy.vm_definition["flavor"] == snapshot.vm_definition["flavor"]
    assert copy.bytes_total == 4 * MiB + 8 * MiB  # one chunk of vda, two of vdb (MiB 2-5 straddle chunks)

    restore = run(services.restore_to_vm, actor=operator, snapshot=copy, name="db-01-dr", vpc="dr-vpc")
    restore.refresh_from_db()
    assert restore.state == Restore.State.DONE, restore.last_error
    assert restore.vm.region_id == "bd-ctg-1" and restore.vm.host.region_id == "bd-ctg-1"
    restored = {v.device: volumes.checksum(v.path) for v in restore.vm.volumes.all()}
    assert restored == {d.device: d.checksum for d in snapshot.disks.all()}


def test_a_failed_copy_says_why_retries_and_deletes_cleanly(
    run, operator, snap_admin, data_volume, stores, settings, django_capture_on_commit_callbacks
):
    snapshot = _snap(run, operator, data_volume, "one")
    good = settings.REGIONS["bd-ctg-1"]
    settings.REGIONS = {**settings.REGIONS, "bd-ctg-1": {**good, "s3_secret_key": "wrong-key-0123456789"}}
    with pytest.raises(Exception, match="403"), django_capture_on_commit_callbacks(execute=True):
        copy = replication.copy_snapshot(actor=operator, snapshot=snapshot, target_region="bd-ctg-1")
    copy = Snapshot.objects.get(source_snapshot=snapshot)
    assert copy.state == Snapshot.State.ERROR and "s3_secret_key" in copy.last_error
    run(services.delete_snapshot, actor=snap_admin, snapshot=snapshot, confirm="one")  # no longer held
    assert Snapshot.objects.filter(pk=snapshot.pk).exists() is False

    snapshot = _snap(run, operator, data_volume, "two")
    with pytest.raises(Exception, match="403"), django_capture_on_commit_callbacks(execute=True):
        replication.copy_snapshot(actor=operator, snapshot=snapshot, target_region="bd-ctg-1")
    copy = Snapshot.objects.get(source_snapshot=snapshot)
    settings.REGIONS = {**settings.REGIONS, "bd-ctg-1": good}
    retried = run(services.retry, actor=operator, snapshot=copy)
    assert retried.state == Snapshot.State.AVAILABLE and retried.bytes_sent == 4 * MiB

    with django_capture_on_commit_callbacks(execute=False):
        doomed = replication.copy_snapshot(
            actor=operator, snapshot=snapshot, target_region="bd-ctg-1", name="x"
        )
    replication_work.fail(str(doomed.pk), "test: failed before landing")
    doomed.refresh_from_db()
    run(services.delete_snapshot, actor=snap_admin, snapshot=doomed, confirm="x")
    assert not Snapshot.objects.filter(pk=doomed.pk).exists()
    assert Chunk.objects.filter(unreferenced_since__isnull=False).count() == 0  # the other copy uses it
