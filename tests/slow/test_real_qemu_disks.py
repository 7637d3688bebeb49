"""Disks plugged into and out of a running VM on real qemu (TCG), the production path of attach,
resize and detach for a running VM (`hypervisor.attach_disk_live`, `resize_disk_live`,
`detach_disk_live`). The guest has no OS (it sits in the BIOS), so it never answers the hot-unplug
request: the detach waits, then fails saying what to do, and qemu still has the disk, as a real guest
that keeps a disk mounted would leave it."""

from __future__ import annotations

import os
import uuid

import pytest

from clouddigit.backends import hypervisor, volumes
from clouddigit.backends.hypervisor import DiskSpec, DomainSpec
from tests.slow.conftest import Session

pytestmark = pytest.mark.slow

MiB = 2**20


def test_hot_plug_resize_and_an_unanswered_unplug(session: Session) -> None:
    uri, vols = session.uri, session.volumes
    boot, data = vols / "boot.qcow2", vols / "data.qcow2"
    for path in (boot, data):
        volumes.create(path, 64 * MiB)
        os.chown(path, session.uid, session.gid)
    spec = DomainSpec("cd-disks", str(uuid.uuid4()), 1, 64, [DiskSpec(str(boot), "vda", boot=True)])
    hypervisor.ensure_domain(uri, spec)
    hypervisor.start(uri, spec)
    assert hypervisor.live_overlays_supported(uri, spec)

    disk = DiskSpec(str(data), "vdb")
    spec = DomainSpec(spec.name, spec.uuid, 1, 64, [*spec.disks, disk])
    hypervisor.attach_disk_live(uri, spec, disk)
    hypervisor.attach_disk_live(uri, spec, disk)  # again: harmless
    assert hypervisor.live_chain(uri, spec, "vdb") == [str(data)]

    hypervisor.resize_disk_live(uri, spec, "vdb", 128 * MiB)
    assert volumes.info(data, force_share=True)["virtual-size"] == 128 * MiB

    with pytest.raises(hypervisor.HypervisorError, match="has not released vdb after 3s. Unmount it"):
        hypervisor.detach_disk_live(uri, spec, "vdb", timeout=3)
    assert hypervisor.live_chain(uri, spec, "vdb") == [str(data)]
    hypervisor.remove(uri, spec)
