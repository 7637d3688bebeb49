"""The volume lifecycle on real qcow2 files and the libvirt test driver: create empty, attach as boot or
secondary, detach (through the worker, with its Detaching state), resize up only, delete with the choice
of what happens to its snapshots. Every bad input is refused with a clear message, changes nothing and
is in the audit log."""

from __future__ import annotations

from pathlib import Path

import pytest

from clouddigit.audit.models import AuditEntry
from clouddigit.backends import volumes as volume_files
from clouddigit.compute import services, work
from clouddigit.compute.models import VM, Volume
from clouddigit.errors import Conflict, InvalidRequest, NotFound
from snapshots import services as snapshots
from snapshots.models import Snapshot
from tests.worker import created

GiB = 2**30


@pytest.fixture
def web(make_vm, prod):
    return make_vm(prod, "web-02")


@pytest.fixture
def spare(alice, prod, dha):
    return created(
        services.create_empty_volume(actor=alice, project=prod, region=dha, name="spare-01", size_gib=2)
    )


def refused(action: str) -> AuditEntry:
    return AuditEntry.objects.filter(action=action, outcome="refused").latest("at")


def test_create_makes_an_empty_qcow2_file_of_that_size(spare, dha):
    assert (spare.state, spare.size_bytes, spare.vm) == ("available", 2 * GiB, None)
    assert Path(spare.path).parent == Path(dha.volume_dir)
    assert volume_files.info(spare.path)["virtual-size"] == 2 * GiB


@pytest.mark.parametrize("size", [0, -5, 10**9, 2.5, True])
def test_create_refuses_sizes_out_of_range_and_makes_no_file(alice, prod, dha, size):
    with pytest.raises(InvalidRequest, match="whole number of GiB from 1 to 16384") as error:
        created(
            services.create_empty_volume(actor=alice, project=prod, region=dha, name="bad", size_gib=size)
        )

    assert error.value.field == "size_gib"
    assert not Volume.objects.exists() and not list(Path(dha.volume_dir).glob("*.qcow2"))
    assert refused("compute.volume.create").actor_name == "alice"


def test_create_refuses_a_name_of_ten_thousand_characters(alice, prod, dha):
    with pytest.raises(InvalidRequest) as error:
        created(
            services.create_empty_volume(actor=alice, project=prod, region=dha, name="x" * 10_000, size_gib=1)
        )

    assert error.value.field == "name" and not Volume.objects.exists()
    assert refused("compute.volume.create")


def test_attach_as_secondary_takes_the_next_free_device(run, alice, spare, web):
    attached = run(services.attach_volume_to, actor=alice, volume=spare, vm="web-02")

    assert (attached.state, attached.vm, attached.device) == ("attached", web, "vdb")
    assert work.domain_spec(web).disks[1].target_dev == "vdb"


def test_attach_as_secondary_at_a_named_device(run, alice, spare, web):
    attached = run(services.attach_volume_to, actor=alice, volume=spare, vm=str(web.pk), device="vdd")
    assert attached.device == "vdd"


def test_a_restored_boot_volume_attached_as_secondary_does_not_boot(run, alice, spare, web):
    Volume.objects.filter(pk=spare.pk).update(bootable=True)
    spare.refresh_from_db()

    run(services.attach_volume_to, actor=alice, volume=spare, vm="web-02")

    assert [(disk.target_dev, disk.boot) for disk in work.domain_spec(web).disks] == [
        ("vda", True),
        ("vdb", False),
    ]


def test_attach_as_boot_uses_the_flavors_boot_device(run, alice, make_vm, prod, dha):
    metal = make_vm(prod, "metal-01", flavor="bm-c1")
    boot = metal.volumes.get()
    run(services.detach_volume, actor=alice, volume=boot)
    spare = created(
        services.create_empty_volume(actor=alice, project=prod, region=dha, name="boot-2", size_gib=1)
    )

    attached = run(services.attach_volume_to, actor=alice, volume=spare, vm="metal-01", boot=True)

    assert attached.device == "sda"


def test_attach_to_a_vm_of_another_project_is_not_found(alice, spare, make_vm, sandbox):
    make_vm(sandbox, "dev-01")

    with pytest.raises(NotFound, match="no VM 'dev-01' in acme/prod"):
        services.attach_volume_to(actor=alice, volume=spare, vm="dev-01")

    spare.refresh_from_db()
    assert spare.state == "available" and spare.vm is None


def test_a_second_boot_disk_is_refused(alice, spare, web):
    with pytest.raises(Conflict, match="already has a boot disk") as error:
        services.attach_volume_to(actor=alice, volume=spare, vm="web-02", boot=True)

    assert error.value.field == "device"
    spare.refresh_from_db()
    assert spare.vm is None
    assert "already has a boot disk" in refused("compute.volume.attach").message


def test_a_device_already_used_is_refused(run, alice, spare, web, prod, dha):
    run(services.attach_volume_to, actor=alice, volume=spare, vm="web-02")
    other = created(
        services.create_empty_volume(actor=alice, project=prod, region=dha, name="other", size_gib=1)
    )

    with pytest.raises(Conflict, match="already has volume spare-01 at vdb"):
        services.attach_volume_to(actor=alice, volume=other, vm="web-02", device="vdb")

    other.refresh_from_db()
    assert other.vm is None and refused("compute.volume.attach")


@pytest.mark.parametrize("device", ["vda", "sdb", "hda", "vdb1"])
def test_a_device_that_does_not_fit_the_flavor_is_refused(alice, spare, web, device):
    with pytest.raises(InvalidRequest) as error:
        services.attach_volume_to(actor=alice, volume=spare, vm="web-02", device=device)
    assert error.value.field == "device"


def test_detach_goes_through_detaching_on_the_worker(alice, spare, web, django_capture_on_commit_callbacks):
    services.attach_volume(actor=alice, volume=spare, vm=web, device="vdb")

    with django_capture_on_commit_callbacks(execute=False) as queued:
        detaching = services.detach_volume(actor=alice, volume=spare)
    assert Volume.objects.get(pk=spare.pk).state == "detaching" == detaching.state
    assert detaching.lease_until is not None

    for callback in queued:
        callback()

    spare.refresh_from_db()
    assert (spare.state, spare.vm, spare.device) == ("available", None, "")
    assert [disk.target_dev for disk in work.domain_spec(web).disks] == ["vda"]


def test_detach_of_a_running_vms_boot_disk_is_refused(run, alice, web):
    run(services.start_vm, actor=alice, vm=web)
    boot = web.volumes.get()

    with pytest.raises(Conflict, match="boot disk .vda. of VM web-02, which is running: stop the VM first"):
        services.detach_volume(actor=alice, volume=boot)

    boot.refresh_from_db()
    assert boot.state == "attached" and refused("compute.volume.detach")


def test_a_secondary_disk_detaches_from_a_running_vm(run, alice, spare, web):
    run(services.start_vm, actor=alice, vm=web)
    run(services.attach_volume_to, actor=alice, volume=spare, vm="web-02")

    detached = run(services.detach_volume, actor=alice, volume=spare)

    assert detached.state == "available"
    assert VM.objects.get(pk=web.pk).state == "running"


def test_a_failed_detach_goes_back_to_attached_with_the_reason(alice, spare, web):
    services.attach_volume(actor=alice, volume=spare, vm=web, device="vdb")
    services.detach_volume(actor=alice, volume=spare)

    work.fail_volume_operation(str(spare.pk), "the guest has not released vdb")

    spare.refresh_from_db()
    assert (spare.state, spare.last_error) == ("attached", "the guest has not released vdb")


def test_resize_is_resizing_until_the_worker_has_grown_the_file(
    alice, spare, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as queued:
        resizing = services.resize_volume(actor=alice, volume=spare, size_gib=5)

    assert (resizing.state, resizing.resize_to_bytes, resizing.size_bytes) == ("resizing", 5 * GiB, 2 * GiB)
    assert volume_files.info(spare.path)["virtual-size"] == 2 * GiB
    with pytest.raises(Conflict, match="is resizing: resize it once that has finished"):
        services.resize_volume(actor=alice, volume=Volume.objects.get(pk=spare.pk), size_gib=6)

    for task in queued:
        task()

    grown = Volume.objects.get(pk=spare.pk)
    assert (grown.state, grown.size_bytes, grown.resize_to_bytes) == ("available", 5 * GiB, None)
    assert volume_files.info(spare.path)["virtual-size"] == 5 * GiB
    assert grown.backing_chain[0]["virtual_size"] == 5 * GiB


def test_a_failed_create_is_an_error_retried_by_its_owner(alice, prod, dha, run, monkeypatch):
    def broken(path, size_bytes):
        raise volume_files.VolumeError("qemu-img create failed: No space left on device")

    monkeypatch.setattr(volume_files, "create", broken)
    with pytest.raises(volume_files.VolumeError):  # the worker's task fails
        run(services.create_empty_volume, actor=alice, project=prod, region=dha, name="v-1", size_gib=1)

    volume = Volume.objects.get(name="v-1")
    assert volume.state == "error" and "No space left on device" in volume.last_error
    assert not Path(volume.path).exists()

    monkeypatch.undo()
    volume = run(services.retry_volume, actor=alice, volume=volume)
    assert (volume.state, volume.last_error) == ("available", "")
    assert volume_files.info(volume.path)["virtual-size"] == GiB


def test_a_create_lost_with_its_worker_is_resumed_by_the_reconciler(
    alice, prod, dha, django_capture_on_commit_callbacks
):
    from clouddigit import operations

    with django_capture_on_commit_callbacks():  # the queued step is lost with its worker
        volume = services.create_empty_volume(actor=alice, project=prod, region=dha, name="v-1", size_gib=1)
    Volume.objects.filter(pk=volume.pk).update(lease_until=None)

    with django_capture_on_commit_callbacks(execute=True):
        assert operations.reconcile() == 1

    volume.refresh_from_db()
    assert volume.state == "available" and Path(volume.path).exists()


def test_resize_never_shrinks(alice, spare):
    with pytest.raises(InvalidRequest, match="volumes only grow: shrinking would cut off the data"):
        services.resize_volume(actor=alice, volume=spare, size_gib=1)

    assert volume_files.info(spare.path)["virtual-size"] == 2 * GiB
    assert refused("compute.volume.resize")


def test_delete_of_an_attached_volume_is_refused(run, alice, spare, web):
    run(services.attach_volume_to, actor=alice, volume=spare, vm="web-02")

    with pytest.raises(Conflict, match="attached to VM web-02 as vdb: detach it first"):
        services.delete_volume(actor=alice, volume=spare, confirm="spare-01")

    assert Path(spare.path).exists() and refused("compute.volume.delete")


def test_delete_needs_the_typed_name(alice, spare):
    with pytest.raises(InvalidRequest, match="Type 'spare-01' to confirm"):
        services.delete_volume(actor=alice, volume=spare, confirm="spare")
    assert Path(spare.path).exists()


def test_delete_removes_the_file_and_the_row(run, alice, spare):
    run(services.delete_volume, actor=alice, volume=spare, confirm="spare-01")

    assert not Volume.objects.filter(pk=spare.pk).exists() and not Path(spare.path).exists()


@pytest.fixture
def snapshotted(run, alice, spare):
    for name in ("snap-1", "snap-2"):
        run(snapshots.create_snapshot, actor=alice, volume=spare, name=name)
    return spare


def test_delete_with_snapshots_asks_what_happens_to_them(alice, snapshotted):
    with pytest.raises(InvalidRequest, match="has 2 snapshots: choose to keep them") as error:
        services.delete_volume(actor=alice, volume=snapshotted, confirm="spare-01")

    assert error.value.code == "SnapshotsNeedChoice" and error.value.field == "snapshots"
    assert Snapshot.objects.count() == 2 and Volume.objects.filter(pk=snapshotted.pk).exists()


def test_delete_keeping_the_snapshots_leaves_them_restorable(run, alice, snapshotted):
    run(services.delete_volume, actor=alice, volume=snapshotted, confirm="spare-01", snapshots="keep")

    assert not Volume.objects.filter(pk=snapshotted.pk).exists()
    kept = Snapshot.objects.get(name="snap-1")
    assert kept.state == "available"
    restore = run(snapshots.restore_to_volume, actor=alice, snapshot=kept, name="spare-restored")
    restore.refresh_from_db()
    assert restore.state == "done" and restore.volume.state == "available"


def test_delete_with_the_snapshots_deletes_them_too(run, alice, snapshotted):
    run(services.delete_volume, actor=alice, volume=snapshotted, confirm="spare-01", snapshots="delete")

    assert not Volume.objects.filter(pk=snapshotted.pk).exists()
    assert not Snapshot.objects.exists()
    assert not [p for p in Path(snapshotted.path).parent.glob("*.qcow2")]
