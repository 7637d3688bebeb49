"""Snapshot records in libvirt: create, list and delete them (the disk data is the volume layer's).

`snapshot_xml` also describes the external overlays that `live.create_live_overlays` asks for.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

import libvirt

from .connections import _is_test_driver, connection
from .domains import ensure_domain
from .errors import _libvirt_errors
from .specs import DomainSpec


def snapshot_xml(
    spec: DomainSpec, name: str, description: str, overlays: Mapping[str, str], external: bool
) -> str:
    """Snapshot XML: internal (test driver) or disk-only external with one new overlay per disk."""
    snapshot = ET.Element("domainsnapshot")
    ET.SubElement(snapshot, "name").text = name
    ET.SubElement(snapshot, "description").text = description
    if external:
        disks = ET.SubElement(snapshot, "disks")
        for disk in spec.disks:
            if disk.path in overlays:
                disk_element = ET.SubElement(disks, "disk", name=disk.target_dev, snapshot="external")
                ET.SubElement(disk_element, "driver", type="qcow2")
                ET.SubElement(disk_element, "source", file=overlays[disk.path])
            else:
                ET.SubElement(disks, "disk", name=disk.target_dev, snapshot="no")
    return ET.tostring(snapshot, encoding="unicode")


def create_snapshot_metadata(
    uri: str,
    spec: DomainSpec,
    name: str,
    description: str = "",
    overlays: Mapping[str, str] | None = None,
) -> str:
    """Record snapshot `name` in libvirt; idempotent (an existing snapshot of that name is kept).

    `overlays` maps a disk's current path (`DiskSpec.path`) to the new overlay that becomes its active
    layer; disks not in it are not part of the snapshot.

    Test driver: an internal snapshot, a metadata record only (the driver makes every internal
    snapshot cover all disks and ignores the overlay paths); the volume layer creates the overlays
    with qemu-img and the next `ensure_domain` with the new paths redefines the domain.

    Real qemu: a disk-only external snapshot (ATOMIC) with metadata, in which libvirt creates each
    overlay and qemu switches the running VM onto it. Snapshot services should use
    `create_live_overlays` instead: the same switch without a libvirt record, because libvirt 9.0 can
    neither revert nor delete external snapshots and a record goes stale once a block job merges its
    layers.
    """
    overlays = dict(overlays or {})
    unknown = set(overlays) - {disk.path for disk in spec.disks}
    if unknown:
        raise ValueError(f"overlays name disks that domain {spec.name!r} does not have: {sorted(unknown)}")
    dom = ensure_domain(uri, spec)
    conn = connection(uri)
    with _libvirt_errors(f"create snapshot '{name}'", uri, spec):
        if name in dom.snapshotListNames():
            return name
        if _is_test_driver(conn):
            dom.snapshotCreateXML(snapshot_xml(spec, name, description, overlays, external=False), 0)
        else:
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
            dom.snapshotCreateXML(snapshot_xml(spec, name, description, overlays, external=True), flags)
    return name


def list_snapshot_metadata(uri: str, spec: DomainSpec) -> list[str]:
    """Names of the snapshots libvirt records for the domain, sorted."""
    dom = ensure_domain(uri, spec)
    with _libvirt_errors("list snapshots", uri, spec):
        return sorted(dom.snapshotListNames())


def delete_snapshot_metadata(uri: str, spec: DomainSpec, name: str) -> bool:
    """Forget snapshot `name` in libvirt; False when it was not there. Disk data is left alone.

    On real qemu only the record goes (METADATA_ONLY): merging layers is the volume layer's job, and
    libvirt before 9.9 cannot delete external snapshots' data anyway.
    """
    dom = ensure_domain(uri, spec)
    with _libvirt_errors(f"delete snapshot '{name}'", uri, spec):
        try:
            snapshot = dom.snapshotLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                return False
            raise
        # The test driver refuses METADATA_ONLY; its internal snapshots are metadata anyway.
        metadata_only = (
            0 if _is_test_driver(connection(uri)) else libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY
        )
        snapshot.delete(metadata_only)
    return True
