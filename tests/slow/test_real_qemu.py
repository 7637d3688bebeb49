"""Snapshots of a running VM on real qemu (TCG) through libvirt, end to end.

What it proves, on the production code path (`clouddigit.backends.hypervisor` and `volumes`, no fakes):
- a VM defined and started through the adapter runs under real qemu (no OS: it sits in the BIOS);
- an application-consistent freeze (`hypervisor.frozen`) without a guest agent falls back to
  crash-consistent at once and records libvirt's reason ("Guest agent is not responding: ...");
  so does `create_live_overlays(quiesce=True)`;
- `create_live_overlays` switches the running disk onto a new overlay that libvirt creates: the old
  file becomes a write-locked layer whose checksum is the disk's view at snapshot time, while the
  guest's later writes (made through the running qemu) land in the overlay; a retry is a no-op;
- restore-to-new is a qemu-img overlay on a layer that qemu holds open, reading back the snapshot;
- deleting snapshots while the VM runs: `commit_into_base` merges a middle layer (delete S2: S3's
  layer is committed into S2's file, which then holds S3's view) and `pull_into_active` merges the
  layer right under the active one (delete the newest); afterwards the running chain no longer
  references the merged files, they are removed, the VM keeps writing, S1, the restored volume and
  the live volume read back byte-identical to reference images built offline with the same writes.

libvirt's `qemu:///session` needs a non-root user (as root it wants the system daemon and systemd):
the `session` fixture (tests/slow/conftest.py) starts a session libvirtd as user `cdtest` and the test
talks to it over its socket, `qemu+unix:///session?socket=...`, the way a worker talks to a remote
host's libvirtd. tests/slow/test_real_qemu_services.py drives the snapshot services the same way.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from clouddigit.backends import hypervisor, volumes
from clouddigit.backends.hypervisor import DiskSpec, DomainSpec
from tests.slow.conftest import Session, guest_write

pytestmark = pytest.mark.slow

MiB = 2**20


def _running_chain_on_disk(path: Path) -> list[str]:
    """The chain as qemu-img reads it from the files; -U (force share) because qemu holds the active
    layer's write lock."""
    import json

    result = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", "--backing-chain", "-f", "qcow2", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [layer["filename"] for layer in json.loads(result.stdout)]


def test_snapshots_of_a_running_vm_on_real_qemu(session: Session, tmp_path: Path) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}
    uri, vols = session.uri, session.volumes
    layer0, layer1, layer2, active = (vols / f"{name}.qcow2" for name in ("boot", "s1", "s2", "active"))
    restored = vols / "restored-s1.qcow2"

    # Reference images, written offline with the same bytes as the guest, give each expected view.
    reference = tmp_path / "reference.qcow2"
    volumes.create(reference, 64 * MiB)
    expected: dict[str, str] = {}

    def write(pattern: int, offset: int, length: int, spec: DomainSpec | None) -> None:
        volumes.write_pattern(reference, offset, length, pattern)
        if spec is not None:
            guest_write(uri, spec, "vda", offset, length, pattern)

    volumes.create(layer0, 64 * MiB)
    volumes.write_pattern(layer0, 0, MiB, 0xAB)
    os.chown(layer0, session.uid, session.gid)
    write(0xAB, 0, MiB, None)
    expected["s1"] = volumes.checksum(reference)
    assert volumes.checksum(layer0) == expected["s1"]

    spec = DomainSpec("cd-real-qemu", str(uuid.uuid4()), 1, 64, [DiskSpec(str(layer0), "vda", boot=True)])
    hypervisor.ensure_domain(uri, spec)
    assert hypervisor.live_overlays_supported(uri, spec) is False  # defined, not running: qemu-img
    tick = time.monotonic()
    assert hypervisor.start(uri, spec) == "started"
    timings["start"] = time.monotonic() - tick
    assert hypervisor.state(uri, spec) == "running"
    assert hypervisor.host_info(uri)["hypervisor"] == "QEMU"
    assert hypervisor.live_overlays_supported(uri, spec) is True

    # S1, application-consistent asked: no guest agent, so crash-consistent with libvirt's reason.
    tick = time.monotonic()
    with hypervisor.frozen(uri, spec, timeout_seconds=5) as freeze:
        s1 = hypervisor.create_live_overlays(uri, spec, {str(layer0): str(layer1)})
    timings["freeze_attempt"] = freeze.elapsed_seconds
    timings["snapshot_s1"] = time.monotonic() - tick
    assert (freeze.frozen, freeze.consistency) == (False, "crash")
    assert "Guest agent is not responding" in freeze.reason
    assert freeze.elapsed_seconds < 5  # refused at once: the agent's channel is not connected
    assert s1.quiesced is False
    spec = s1.spec
    assert [disk.path for disk in spec.disks] == [str(layer1)]
    assert hypervisor.live_chain(uri, spec, "vda") == [str(layer1), str(layer0)]
    assert _running_chain_on_disk(layer1) == [str(layer1), str(layer0)]
    # The old file is now a layer: qemu holds its write lock, and it reads back the snapshot's view.
    locked = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -q 0 512", str(layer0)], capture_output=True, text=True
    )
    assert locked.returncode != 0 and 'Failed to get "write" lock' in locked.stderr + locked.stdout
    assert volumes.checksum(layer0) == expected["s1"]
    with pytest.raises(volumes.VolumeError, match='write" lock'):
        volumes.info(layer1)  # the active layer: needs -U while qemu runs

    write(0xCD, MiB, MiB, spec)
    write(0xEE, 0, 64 * 1024, spec)
    expected["s2"] = volumes.checksum(reference)

    # S2 with QUIESCE: libvirt's own freeze fails the same way and the switch goes ahead.
    before_s2 = spec
    s2 = hypervisor.create_live_overlays(
        uri, spec, {str(layer1): str(layer2)}, quiesce=True, timeout_seconds=5
    )
    assert s2.quiesced is False and "Guest agent is not responding" in s2.reason
    spec = s2.spec
    again = hypervisor.create_live_overlays(uri, before_s2, {str(layer1): str(layer2)})  # a retried task
    assert again.spec == spec and again.reason == "already switched by an earlier attempt"
    assert volumes.checksum(layer1) == expected["s2"]

    write(0x11, 2 * MiB, MiB, spec)
    expected["s3"] = volumes.checksum(reference)
    spec = hypervisor.create_live_overlays(uri, spec, {str(layer2): str(active)}).spec
    assert volumes.checksum(layer2) == expected["s3"]
    write(0x22, 3 * MiB, 64 * 1024, spec)
    assert hypervisor.live_chain(uri, spec, "vda") == [str(active), str(layer2), str(layer1), str(layer0)]
    assert _running_chain_on_disk(active) == [str(active), str(layer2), str(layer1), str(layer0)]

    # Restore S1 to a new volume: an overlay on a layer that qemu holds open.
    volumes.create_overlay(restored, layer0)
    assert volumes.checksum(restored) == expected["s1"]

    # Delete S2 while running. Its layer (s1.qcow2) lies in the middle and nothing but S3's layer backs
    # onto it, so S3's layer is committed into it: s1.qcow2 then holds S3's view and s2.qcow2 goes.
    tick = time.monotonic()
    assert hypervisor.commit_into_base(uri, spec, "vda", top=str(layer2), base=str(layer1)) == "merged"
    timings["commit_middle_layer"] = time.monotonic() - tick
    assert hypervisor.live_chain(uri, spec, "vda") == [str(active), str(layer1), str(layer0)]
    assert volumes.checksum(layer1) == expected["s3"]
    layer2.unlink()
    assert (
        hypervisor.commit_into_base(uri, spec, "vda", top=str(layer2), base=str(layer1)) == "already_merged"
    )

    # Delete S3 (now in s1.qcow2, right under the active layer): pull it into the active layer.
    # Only the active layer is written, so S1's layer and the volume restored from it stay identical.
    tick = time.monotonic()
    assert hypervisor.pull_into_active(uri, spec, "vda", base=str(layer0)) == "merged"
    timings["pull_into_active"] = time.monotonic() - tick
    assert hypervisor.live_chain(uri, spec, "vda") == [str(active), str(layer0)]
    assert _running_chain_on_disk(active) == [str(active), str(layer0)]
    layer1.unlink()
    assert hypervisor.pull_into_active(uri, spec, "vda", base=str(layer0)) == "already_merged"
    assert volumes.checksum(layer0) == expected["s1"]
    assert volumes.checksum(restored) == expected["s1"]

    # The VM carries on writing on the shortened chain.
    write(0x33, 4 * MiB, 64 * 1024, spec)
    expected["live"] = volumes.checksum(reference)

    tick = time.monotonic()
    assert hypervisor.stop(uri, spec, graceful_timeout=1) == "destroyed"  # no OS to answer ACPI
    timings["stop"] = time.monotonic() - tick
    assert hypervisor.live_overlays_supported(uri, spec) is False
    assert [layer["filename"] for layer in volumes.backing_chain(active)] == [str(active), str(layer0)]
    assert volumes.checksum(active) == expected["live"]
    with pytest.raises(hypervisor.HypervisorError, match="not running"):
        hypervisor.pull_into_active(uri, spec, "vda", base=None)

    timings["total"] = time.monotonic() - started
    print("real qemu timings (s): " + ", ".join(f"{name}={value:.3f}" for name, value in timings.items()))
