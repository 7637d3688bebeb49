"""The snapshot services (create / restore to a new volume / delete) of a VM running on real qemu.

The same calls the console, the API and the CLI make (`snapshots.services`, `clouddigit.compute.services`),
with their Celery tasks run in this process as a worker runs them, against a real host: a libvirt session
daemon (`qemu:///session`) running as the non-root user `cdtest` (the `session` fixture,
tests/slow/conftest.py), with the VM under TCG. No fakes on the production path:

- the VM is created, its volumes written while it is stopped, and it is started through `start_vm`
  (`apply_power_state` -> `hypervisor.start`): qemu sits in the BIOS, there is no OS and no guest agent;
- an application-consistent snapshot asked for falls back to crash-consistent at once, and the
  snapshot records libvirt's reason ("Guest agent is not responding ...") and the VM's agent status;
- `take` switches every disk onto an overlay that libvirt creates (`chains.seal_live`): the rows then
  name the files qemu runs on, and the layers' recorded checksums (`measure`) are the volumes' own
  checksums from before the snapshot;
- restore-to-new of the data disk is an overlay on a layer qemu holds open; it reads back the recorded
  checksum and the restore records its time to restore;
- deleting the snapshots while the VM runs takes every merge path of `chains.merge_away`: a middle
  layer (S2: qemu commits S3's layer into it), the layer right under the active one (S3: block pull
  onto S1), and the bottom layer that a restored volume also reads (S1: block pull that flattens the
  running disk, qemu-img rebase of the restored volume). Afterwards the running chains no longer name
  the merged files, the files are gone, the restored volume and the VM's disks read back byte-identical
  to reference images written offline with the same bytes, and the VM keeps running.

The worker runs as root here and qemu as `cdtest`: a system libvirtd gives the disk files to its qemu
user itself (dynamic_ownership); the session daemon does not, so the test hands the volume files it
created through the services to `cdtest` before the VM starts (files libvirt creates are qemu's already).
"""

from __future__ import annotations

import functools
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from clouddigit.backends import hypervisor, volumes
from clouddigit.compute import services as compute
from clouddigit.compute import work as compute_work
from clouddigit.compute.models import VM, Host, Layer, Volume
from snapshots import services as snapshots
from snapshots import work as snapshot_work
from snapshots.models import Restore, Snapshot
from tests.slow.conftest import Session, guest_write
from tests.worker import created

pytestmark = pytest.mark.slow

MiB = 2**20
SIZES = {"vda": 64 * MiB, "vdb": 32 * MiB}


def test_snapshot_services_on_a_running_vm_on_real_qemu(
    session: Session, dha, prod, operator, run, monkeypatch, tmp_path: Path
) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}

    def timed(label: str, service, **kwargs):
        tick = time.monotonic()
        result = run(service, **kwargs)
        timings[label] = time.monotonic() - tick
        return result

    # The region of the test has one host, the session daemon, and its volumes live where qemu can reach.
    uri = session.uri
    info = hypervisor.host_info(uri)
    assert info["hypervisor"] == "QEMU"
    Host.objects.filter(region=dha).delete()
    Host.objects.create(
        region=dha, name="cdtest-session", libvirt_uri=uri, cpus=info["cpus"], memory_mib=info["memory_mib"]
    )
    dha.volume_dir = str(session.volumes)
    dha.save()

    vm = created(
        compute.create_vm(
            actor=None,
            project=prod,
            region=dha,
            name="qemu-vm",
            flavor="std-1x2",
            vpc="test-vpc",
            boot_size_bytes=SIZES["vda"],
        )
    )
    data = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="qemu-data", size_bytes=SIZES["vdb"])
    )
    compute.attach_volume(actor=None, volume=data, vm=vm, device="vdb")
    assert vm.host.libvirt_uri == uri

    # Reference images get the same writes as the VM's disks: each one's checksum is an expected view.
    reference = {device: tmp_path / f"reference-{device}.qcow2" for device in SIZES}
    for device, size in SIZES.items():
        volumes.create(reference[device], size)

    def volume(device: str) -> Volume:
        return vm.volumes.get(device=device)

    def write(device: str, offset: int, length: int, pattern: int) -> None:
        volumes.write_pattern(reference[device], offset, length, pattern)
        vm.refresh_from_db()
        if vm.state == VM.State.RUNNING:
            guest_write(uri, compute_work.domain_spec(vm), device, offset, length, pattern, flush=True)
        else:
            volumes.write_pattern(volume(device).path, offset, length, pattern)

    def views() -> dict[str, str]:
        return {device: volumes.checksum(path) for device, path in reference.items()}

    write("vda", 0, MiB, 0xAB)
    write("vdb", 0, 4 * MiB, 0x11)
    before = {device: volumes.checksum(volume(device).path) for device in SIZES}
    assert before == views()
    originals = {device: volume(device).path for device in SIZES}
    for path in originals.values():
        os.chown(path, session.uid, session.gid)

    # Start through the services: the worker step boots the domain on the real host.
    vm = timed("start_vm", compute.start_vm, actor=None, vm=vm)
    assert (vm.state, vm.last_error) == (VM.State.RUNNING, "")
    spec = compute_work.domain_spec(vm)
    assert hypervisor.live_overlays_supported(uri, spec) is True
    conn = hypervisor.connection(uri)
    domain_type = ET.fromstring(conn.lookupByUUIDString(str(vm.id)).XMLDesc(0)).get("type")
    caps = ET.fromstring(conn.getCapabilities())
    kvm_usable = caps.find("./guest/arch[@name='x86_64']/domain[@type='kvm']") is not None
    assert domain_type == ("kvm" if kvm_usable else "qemu")

    def snapshot_disks(snapshot: Snapshot) -> dict:
        return {disk.device: disk for disk in snapshot.disks.select_related("layer", "volume")}

    def take(name: str) -> Snapshot:
        """A VM snapshot asked application-consistent: no agent, so crash-consistent with the reason."""
        snapshot = timed(
            f"snapshot_{name}",
            snapshots.create_snapshot,
            actor=operator,
            vm=vm,
            name=name,
            consistency="application",
        )
        assert (snapshot.state, snapshot.last_error, snapshot.step) == (Snapshot.State.AVAILABLE, "", "")
        assert snapshot.consistency_requested == Snapshot.Consistency.APPLICATION
        assert snapshot.consistency_achieved == Snapshot.Consistency.CRASH
        assert "Guest agent is not responding" in snapshot.consistency_reason
        assert snapshot.sizes_measured_at is not None
        for device, disk in snapshot_disks(snapshot).items():
            # The volume now runs on the overlay libvirt created, on top of the sealed layer.
            live = volume(device)
            assert (live.path, live.backing_layer_id) == (disk.overlay_path, disk.layer_id)
            chain = hypervisor.live_chain(uri, compute_work.domain_spec(vm), device)
            assert chain[:2] == [disk.overlay_path, disk.layer.path]
            assert Path(disk.overlay_path).stat().st_uid == session.uid  # created by the host, for qemu
        return snapshot

    # S1: the layers are the volumes' files from before, and their recorded checksums say so.
    s1 = take("s1")
    s1_disks = snapshot_disks(s1)
    assert {device: disk.layer.path for device, disk in s1_disks.items()} == originals
    assert {device: disk.checksum for device, disk in s1_disks.items()} == before
    assert s1.billed_bytes == 0  # nothing written since
    vm.refresh_from_db()
    assert vm.guest_agent == VM.GuestAgent.NOT_RUNNING  # the freeze attempt is the freshest word

    # The guest writes on; S1 now costs the 1 MiB of its data that the live volume overwrote.
    write("vdb", MiB, MiB, 0x22)
    write("vda", 2 * MiB, 64 * 1024, 0xCD)
    snapshot_work.measure(str(s1.pk))
    s1.refresh_from_db()
    assert s1.billed_bytes == MiB

    # Restore S1's data disk to a new volume while the VM runs: an overlay on S1's layer.
    restore = timed(
        "restore_to_volume",
        snapshots.restore_to_volume,
        actor=operator,
        snapshot=s1,
        name="qemu-data-s1",
        disk=s1_disks["vdb"],
    )
    assert (restore.state, restore.last_error) == (Restore.State.DONE, "")
    assert restore.seconds is not None and 0 <= restore.seconds < 30
    restored = Volume.objects.get(pk=restore.volume_id)
    assert (restored.state, restored.backing_layer_id) == (Volume.State.AVAILABLE, s1_disks["vdb"].layer_id)
    assert volumes.checksum(restored.path) == s1_disks["vdb"].checksum == before["vdb"]

    expected = {"s2": views()}
    s2 = take("s2")
    assert {device: disk.checksum for device, disk in snapshot_disks(s2).items()} == expected["s2"]
    write("vdb", 3 * MiB, MiB, 0x33)
    write("vda", 4 * MiB, 64 * 1024, 0xEF)
    expected["s3"] = views()
    s3 = take("s3")
    assert {device: disk.checksum for device, disk in snapshot_disks(s3).items()} == expected["s3"]
    write("vdb", 5 * MiB, 64 * 1024, 0x44)
    write("vda", 6 * MiB, 64 * 1024, 0x55)
    layers = {name: snapshot_disks(snap) for name, snap in (("s1", s1), ("s2", s2), ("s3", s3))}
    paths = {
        name: {device: disk.layer.path for device, disk in disks.items()} for name, disks in layers.items()
    }
    for device in SIZES:
        assert hypervisor.live_chain(uri, compute_work.domain_spec(vm), device) == [
            volume(device).path,
            paths["s3"][device],
            paths["s2"][device],
            paths["s1"][device],
        ]

    def assert_still_running() -> None:
        vm.refresh_from_db()
        assert vm.state == VM.State.RUNNING
        assert hypervisor.live_overlays_supported(uri, compute_work.domain_spec(vm)) is True
        assert volumes.checksum(restored.path) == before["vdb"]

    # Delete S2, a middle layer: qemu commits S3's layer into S2's file, which then holds S3's view.
    timed("delete_s2_middle", snapshots.delete_snapshot, actor=operator, snapshot=s2, confirm=s2.name)
    assert not Snapshot.objects.filter(pk=s2.pk).exists()
    for device, disk in snapshot_disks(s3).items():
        assert disk.layer.path == paths["s2"][device]
        assert volumes.checksum(disk.layer.path) == disk.checksum == expected["s3"][device]
        assert not Path(paths["s3"][device]).exists()
        assert hypervisor.live_chain(uri, compute_work.domain_spec(vm), device) == [
            volume(device).path,
            paths["s2"][device],
            paths["s1"][device],
        ]
    assert_still_running()

    # Delete S3, now the layer right under the active one: a block pull onto S1's layer.
    timed("delete_s3_newest", snapshots.delete_snapshot, actor=operator, snapshot=s3, confirm=s3.name)
    assert not Snapshot.objects.filter(pk=s3.pk).exists()
    for device in SIZES:
        assert not Path(paths["s2"][device]).exists()
        assert hypervisor.live_chain(uri, compute_work.domain_spec(vm), device) == [
            volume(device).path,
            paths["s1"][device],
        ]
        assert volume(device).backing_layer_id == layers["s1"][device].layer_id
    assert {device: volumes.checksum(path) for device, path in paths["s1"].items()} == before
    assert_still_running()

    # Delete S1, which the restored volume reads too: the running disks are flattened by a block pull,
    # the restored volume (not attached) is rebased onto nothing with qemu-img; it reads the same.
    timed("delete_s1_bottom", snapshots.delete_snapshot, actor=operator, snapshot=s1, confirm=s1.name)
    assert not Snapshot.objects.filter(pk=s1.pk).exists()
    assert not Layer.objects.exists()
    for device in SIZES:
        assert hypervisor.live_chain(uri, compute_work.domain_spec(vm), device) == [volume(device).path]
        assert volume(device).backing_layer_id is None
    restored.refresh_from_db()
    assert restored.backing_layer_id is None
    assert [layer["filename"] for layer in volumes.backing_chain(restored.path)] == [restored.path]
    left = {str(path) for path in session.volumes.iterdir() if path.name != ".locks"}
    assert left == {volume("vda").path, volume("vdb").path, restored.path}
    assert list((session.volumes / ".locks").iterdir()) == []  # no lock left behind
    assert_still_running()

    # The VM keeps writing on its shortened chains.
    write("vdb", 6 * MiB, 64 * 1024, 0x66)
    expected["live"] = views()

    # Stop through the services. No OS answers ACPI in the BIOS, so power off after 1 s instead of the
    # production 60 s of waiting for a graceful shutdown.
    monkeypatch.setattr(hypervisor, "stop", functools.partial(hypervisor.stop, graceful_timeout=1.0))
    vm = timed("stop_vm", compute.stop_vm, actor=None, vm=vm)
    assert (vm.state, vm.last_error) == (VM.State.STOPPED, "")
    assert hypervisor.live_overlays_supported(uri, compute_work.domain_spec(vm)) is False
    assert {device: volumes.checksum(volume(device).path) for device in SIZES} == expected["live"]

    timings["total"] = time.monotonic() - started
    print(
        f"real qemu services (domain type {domain_type}) timings (s): "
        + ", ".join(f"{name}={value:.3f}" for name, value in timings.items())
    )
