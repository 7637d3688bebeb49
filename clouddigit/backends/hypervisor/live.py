"""Live disk chains (real qemu): overlays switched in and block jobs run while the VM runs.

While qemu runs a VM, the VM's qcow2 chains belong to qemu: it holds the active layer's write lock and
keeps every backing layer write-locked too (qemu-img rebase/commit on them fails with 'Failed to get
"write" lock'; reads still work). So a snapshot of a running VM asks qemu (through libvirt) to switch
each disk onto a new overlay (`create_live_overlays`), and merging a layer out of a running chain is a
qemu block job (`pull_into_active`, `commit_into_base`). For a stopped VM, or on the test driver, the
caller does the same with qemu-img on the files; `live_overlays_supported` says which applies.
"""

from __future__ import annotations

import logging
import os
import time
import uuid as uuid_lib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import libvirt

from .connections import _is_test_driver, connection
from .domains import (
    _config_of_domain,
    _config_of_spec,
    _domain_type,
    _lookup,
    domain_xml,
)
from .errors import HypervisorError, _libvirt_errors
from .guest_freeze import _set_agent_timeout
from .snapshot_metadata import snapshot_xml
from .specs import DiskSpec, DomainSpec

logger = logging.getLogger(__name__)


def live_overlays_supported(uri: str, spec: DomainSpec) -> bool:
    """True when a real qemu process runs the domain (running or paused), so that its disks' chains
    must be changed through libvirt: `create_live_overlays`, `pull_into_active`, `commit_into_base`.

    False for a domain that is not running (or not defined yet) and always on the test driver: there
    the caller changes the files with qemu-img (`volumes.create_overlay`, a rebase) and records the
    new paths; the next `ensure_domain` redefines the domain with them.
    """
    conn = connection(uri)
    if _is_test_driver(conn):
        return False
    with _libvirt_errors("read domain state", uri, spec):
        dom = _lookup(conn, spec)
        return dom is not None and bool(dom.isActive())


@dataclass(frozen=True)
class LiveOverlays:
    """What `create_live_overlays` did.

    `spec` is the domain with each snapshotted disk's path replaced by its overlay: record those paths
    at once (libvirt has already changed the domain's persistent definition to them). `quiesced` says
    whether libvirt froze the guest's filesystems around the switch (QUIESCE); `reason` says why not,
    when it was asked for.
    """

    spec: DomainSpec
    quiesced: bool
    reason: str = ""
    elapsed_seconds: float = 0.0


# libvirt's answers when QUIESCE cannot reach a guest agent (none installed, not running, no channel).
_AGENT_MISSING_CODES = {
    getattr(libvirt, name, None)
    for name in (
        "VIR_ERR_AGENT_UNRESPONSIVE",
        "VIR_ERR_AGENT_UNSYNCED",
        "VIR_ERR_AGENT_COMMAND_TIMEOUT",
        "VIR_ERR_AGENT_COMMAND_FAILED",
        "VIR_ERR_ARGUMENT_UNSUPPORTED",
        "VIR_ERR_OPERATION_UNSUPPORTED",
        "VIR_ERR_OPERATION_TIMEOUT",
    )
} - {None}


def _running_domain(conn: libvirt.virConnect, uri: str, spec: DomainSpec, action: str) -> libvirt.virDomain:
    """The domain qemu runs for `spec`, looked up without redefining it (a redefinition from a row that
    lags behind a live snapshot would point the next boot at a sealed layer)."""
    if _is_test_driver(conn):
        raise HypervisorError(
            f"{action} failed on host {uri} for domain '{spec.name}' ({spec.uuid}): the test driver runs "
            "no qemu; change the volume files with qemu-img instead (live_overlays_supported() is False).",
            uri=uri,
            domain=spec.name,
            code=libvirt.VIR_ERR_NO_SUPPORT,
        )
    dom = _lookup(conn, spec)
    if dom is None or not dom.isActive():
        raise HypervisorError(
            f"{action} failed on host {uri} for domain '{spec.name}' ({spec.uuid}): the domain is not "
            "running; change the volume files with qemu-img instead (live_overlays_supported() is False).",
            uri=uri,
            domain=spec.name,
            code=libvirt.VIR_ERR_OPERATION_INVALID,
        )
    return dom


def _live_disk(dom: libvirt.virDomain, target: str) -> ET.Element | None:
    root = ET.fromstring(dom.XMLDesc(0))
    for disk in root.findall("./devices/disk"):
        element = disk.find("target")
        if element is not None and element.get("dev") == target:
            return disk
    return None


def _chain_of(disk: ET.Element) -> list[str]:
    """Paths of a live <disk>'s chain, active layer first (libvirt lists <backingStore> nested)."""
    chain = []
    node: ET.Element | None = disk
    while node is not None:
        source = node.find("source")
        path = source.get("file") if source is not None else None
        if path is None:
            break
        chain.append(path)
        node = node.find("backingStore")
    return chain


def _live_chain(dom: libvirt.virDomain, uri: str, spec: DomainSpec, target: str) -> list[str]:
    disk = _live_disk(dom, target)
    if disk is None:
        raise HypervisorError(
            f"read disk chain failed on host {uri} for domain '{spec.name}' ({spec.uuid}): the running "
            f"domain has no disk {target!r}. Compare `virsh domblklist` with the VM's volumes.",
            uri=uri,
            domain=spec.name,
        )
    return _chain_of(disk)


def live_chain(uri: str, spec: DomainSpec, target: str) -> list[str]:
    """The chain qemu has open for disk `target` of the running domain: active layer first, base last."""
    conn = connection(uri)
    with _libvirt_errors("read disk chain", uri, spec):
        dom = _running_domain(conn, uri, spec, "read disk chain")
        return _live_chain(dom, uri, spec, target)


def create_live_overlays(
    uri: str,
    spec: DomainSpec,
    overlays: Mapping[str, str],
    quiesce: bool = False,
    timeout_seconds: float = 10.0,
) -> LiveOverlays:
    """Switch the running domain's disks onto new empty qcow2 overlays, in one atomic step.

    `overlays` maps a disk's current active path (`DiskSpec.path`) to its new overlay path, which must
    not exist: libvirt creates it (qcow2, backed by the old path with an absolute name and an explicit
    format) and qemu carries on writing into it, so the old file is from then on a read-only layer
    holding the disk's point-in-time view. Disks not named are left alone. A disk-only external
    snapshot with NO_METADATA and ATOMIC: libvirt keeps no snapshot record (the database is the
    truth; libvirt 9.0 could neither revert nor delete external snapshots anyway) and either every
    disk switches or none does.

    `quiesce=True` asks libvirt to freeze the guest's filesystems through qemu-guest-agent around the
    switch (QUIESCE, bounded by `timeout_seconds` through the agent timeout); when the agent does not
    answer, the overlays are taken crash-consistent and the result says why. Do not combine it with
    `frozen()`: use one or the other.

    Idempotent: a disk whose running chain already has the overlay on top of the old path counts as
    done, so a retried task gets the same answer. Raises `HypervisorError` when the domain is not
    running (see `live_overlays_supported`) or libvirt refuses.
    """
    overlays = dict(overlays)
    known = {disk.path: disk for disk in spec.disks}
    unknown = set(overlays) - set(known)
    if unknown:
        raise ValueError(f"overlays name disks that domain {spec.name!r} does not have: {sorted(unknown)}")
    for new_path in overlays.values():
        if not os.path.isabs(new_path):
            raise ValueError(f"overlay path must be absolute: {new_path!r}")
    new_spec = DomainSpec(
        spec.name,
        spec.uuid,
        spec.vcpus,
        spec.memory_mib,
        [replace_path(disk, overlays.get(disk.path, disk.path)) for disk in spec.disks],
    )
    started = time.monotonic()
    conn = connection(uri)
    action = "create live overlays"
    with _libvirt_errors(action, uri, spec):
        dom = _running_domain(conn, uri, spec, action)
        pending: dict[str, str] = {}
        for old_path, new_path in overlays.items():
            chain = _live_chain(dom, uri, spec, known[old_path].target_dev)
            if chain[:2] == [new_path, old_path]:
                continue  # an earlier attempt switched this disk
            if not chain or chain[0] != old_path:
                raise HypervisorError(
                    f"{action} failed on host {uri} for domain '{spec.name}' ({spec.uuid}): disk "
                    f"{known[old_path].target_dev} runs on {chain[:1]}, not on {old_path}. The database and "
                    "the host disagree about the volume's active file; compare `virsh domblklist`.",
                    uri=uri,
                    domain=spec.name,
                )
            pending[old_path] = new_path
        if not pending:
            _sync_definition(conn, dom, new_spec, uri)
            return LiveOverlays(new_spec, quiesced=False, reason="already switched by an earlier attempt")
        xml = snapshot_xml(spec, f"overlay-{uuid_lib.uuid4()}", "", pending, external=True)
        flags = (
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
        )
        quiesced, reason = False, ""
        if quiesce:
            _set_agent_timeout(dom, timeout_seconds)
            try:
                dom.snapshotCreateXML(xml, flags | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE)
                quiesced = True
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in _AGENT_MISSING_CODES:
                    raise
                reason = exc.get_error_message() or str(exc)
                logger.warning(
                    "quiesced overlays of %s on %s refused (%s); taking them crash-consistent",
                    spec.name,
                    uri,
                    reason,
                )
        if not quiesced:
            dom.snapshotCreateXML(xml, flags)
        _sync_definition(conn, dom, new_spec, uri)
    return LiveOverlays(new_spec, quiesced, reason, time.monotonic() - started)


def replace_path(disk: DiskSpec, path: str) -> DiskSpec:
    """`disk` with another active path (its new overlay)."""
    return DiskSpec(path, disk.target_dev, disk.bus, disk.fmt, disk.boot)


def _sync_definition(conn: libvirt.virConnect, dom: libvirt.virDomain, spec: DomainSpec, uri: str) -> None:
    # libvirt updates the persistent definition itself; this repairs one that an `ensure_domain` from a
    # stale row rewrote between a switch and its retry, so the next boot uses the overlays.
    if _config_of_domain(dom) != _config_of_spec(spec):
        logger.info("redefining domain %s (%s) on %s with its live overlays", spec.name, spec.uuid, uri)
        conn.defineXML(domain_xml(spec, _domain_type(conn)))


BlockJobOutcome = Literal["merged", "already_merged"]


def pull_into_active(
    uri: str,
    spec: DomainSpec,
    target: str,
    base: str | None,
    timeout_seconds: float = 3600.0,
    poll_interval: float = 0.2,
) -> BlockJobOutcome:
    """Copy every layer between `base` and the active layer of disk `target` into the active layer
    (a block stream: `virDomainBlockRebase`), while the domain runs; the active layer then backs
    directly onto `base` (`None`: onto nothing, the disk is flattened).

    Only the active layer is written: the layers pulled in and everything below stay byte-identical,
    so snapshots and restored volumes built on them keep reading the same; the caller deletes a pulled
    layer's file once nothing else backs onto it. This is how deleting the newest snapshot of a
    running volume merges its layer (the one right under the active layer): `base` is that layer's
    own backing file.

    Waits at most `timeout_seconds` for the job; on timeout the job is cancelled (the chain stays
    valid) and `HypervisorError` is raised. Idempotent: "already_merged" when the active layer already
    backs onto `base`.
    """
    return _block_job(
        uri, spec, target, top=None, base=base, timeout_seconds=timeout_seconds, poll_interval=poll_interval
    )


def commit_into_base(
    uri: str,
    spec: DomainSpec,
    target: str,
    top: str,
    base: str,
    timeout_seconds: float = 3600.0,
    poll_interval: float = 0.2,
) -> BlockJobOutcome:
    """Write the layers from `top` down to just above `base` into `base` (a block commit:
    `virDomainBlockCommit`), while the domain runs; the layer that backed onto `top` then backs onto
    `base`, which from then on holds `top`'s point-in-time view.

    `top` must be a backing layer, not the active one. `base` is changed in place: only sound when
    `base`'s own view is being deleted and nothing else (a restored volume, another branch, an image)
    backs onto `base`. Use it to delete a snapshot whose layer `base` lies deeper in a running chain:
    afterwards the snapshot that owned `top` lives in `base`'s file and `top`'s file can go once
    nothing else backs onto it. `top`'s own file is only read, so it stays a valid view meanwhile.

    Bounded and idempotent like `pull_into_active` ("already_merged" when `top` is no longer in the
    chain and `base` is).
    """
    return _block_job(
        uri, spec, target, top=top, base=base, timeout_seconds=timeout_seconds, poll_interval=poll_interval
    )


def _block_job(
    uri: str,
    spec: DomainSpec,
    target: str,
    *,
    top: str | None,
    base: str | None,
    timeout_seconds: float,
    poll_interval: float,
) -> BlockJobOutcome:
    name = "block pull" if top is None else "block commit"
    action = f"{name} on disk {target}"
    conn = connection(uri)
    with _libvirt_errors(action, uri, spec):
        dom = _running_domain(conn, uri, spec, action)
        if dom.blockJobInfo(target, 0):  # an earlier attempt's job is still running: let it finish
            _wait_for_job(dom, uri, spec, target, action, timeout_seconds, poll_interval)
        chain = _live_chain(dom, uri, spec, target)
        merged = _merged_layers(chain, top, base)
        if merged is None:
            raise HypervisorError(
                f"{action} failed on host {uri} for domain '{spec.name}' ({spec.uuid}): "
                f"top {top or chain[:1]} and base {base} are not in that order in the running chain "
                f"{chain}. Compare the volume's layers with `virsh domblklist --details` and "
                f"`qemu-img info -U --backing-chain`.",
                uri=uri,
                domain=spec.name,
            )
        if not merged:
            return "already_merged"
        started = time.monotonic()
        if top is None:
            dom.blockRebase(target, base, 0, 0)
        else:
            dom.blockCommit(target, base, top, 0, 0)
        _wait_for_job(dom, uri, spec, target, action, timeout_seconds, poll_interval)
        after = _live_chain(dom, uri, spec, target)
        left = [path for path in merged if path in after]
        if left or (base is not None and base not in after):
            raise HypervisorError(
                f"{action} failed on host {uri} for domain '{spec.name}' ({spec.uuid}): the job ended "
                f"but the chain is {after}. See libvirtd's log on that host; retrying starts it again.",
                uri=uri,
                domain=spec.name,
            )
        logger.info(
            "%s of %s on %s merged %s in %.2fs", name, spec.name, uri, merged, time.monotonic() - started
        )
        return "merged"


def _merged_layers(chain: list[str], top: str | None, base: str | None) -> list[str] | None:
    """The layers a job from `top` (None: the active layer) to `base` removes from `chain`; [] when
    that is already done, None when `top`/`base` do not fit the chain."""
    base_index = len(chain) if base is None else (chain.index(base) if base in chain else None)
    if base_index is None or base_index == 0:
        return None
    if top is None:
        return chain[1:base_index]
    if top not in chain:
        return []  # committed by an earlier attempt (base is still there)
    top_index = chain.index(top)
    if top_index == 0 or top_index >= base_index:
        return None  # the active layer (needs an active commit and pivot) or below base
    return chain[top_index:base_index]


def _wait_for_job(
    dom: libvirt.virDomain,
    uri: str,
    spec: DomainSpec,
    target: str,
    action: str,
    timeout_seconds: float,
    poll_interval: float,
) -> None:
    deadline = time.monotonic() + timeout_seconds
    while True:
        info = dom.blockJobInfo(target, 0)
        if not info:
            return
        if time.monotonic() >= deadline:
            progress = f"{info.get('cur', 0)} of {info.get('end', 0)} bytes"
            try:
                dom.blockJobAbort(target, 0)
            except libvirt.libvirtError:
                logger.exception("cancelling the %s of %s on %s failed", action, spec.name, uri)
            raise HypervisorError(
                f"{action} failed on host {uri} for domain '{spec.name}' ({spec.uuid}): not finished "
                f"after {timeout_seconds:g}s ({progress}); the job was cancelled and the chain is as "
                "before. The host is busy or the layers are large: retry later with a longer timeout.",
                uri=uri,
                domain=spec.name,
                code=libvirt.VIR_ERR_OPERATION_TIMEOUT,
            )
        time.sleep(poll_interval)


# --- Disks plugged in and out of a running VM -------------------------------------------------------------

DETACH_TIMEOUT_SECONDS = 60.0


def _disk_xml(disk: DiskSpec) -> str:
    element = ET.Element("disk", type="file", device="disk")
    ET.SubElement(element, "driver", name="qemu", type=disk.fmt)
    ET.SubElement(element, "source", file=disk.path)
    ET.SubElement(element, "target", dev=disk.target_dev, bus=disk.bus)
    return ET.tostring(element, encoding="unicode")


def _live_flags() -> int:
    return libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG


def attach_disk_live(uri: str, spec: DomainSpec, disk: DiskSpec) -> None:
    """Hot-plug `disk` into the running domain (and its persistent definition). Harmless when qemu
    already has it. Only where `live_overlays_supported`; elsewhere the next `ensure_domain` adds it."""
    conn = connection(uri)
    with _libvirt_errors("attach disk", uri, spec):
        dom = _running_domain(conn, uri, spec, "attach disk")
        if _live_disk(dom, disk.target_dev) is None:
            dom.attachDeviceFlags(_disk_xml(disk), _live_flags())


def detach_disk_live(
    uri: str, spec: DomainSpec, target: str, timeout: float = DETACH_TIMEOUT_SECONDS, poll: float = 0.5
) -> None:
    """Unplug disk `target` from the running domain and wait until qemu has let it go: the guest must
    release it (an ACPI hot-unplug), which takes a moment and can be refused. Harmless when it is gone."""
    conn = connection(uri)
    with _libvirt_errors("detach disk", uri, spec):
        dom = _running_domain(conn, uri, spec, "detach disk")
        disk = _live_disk(dom, target)
        if disk is None:
            return
        dom.detachDeviceFlags(ET.tostring(disk, encoding="unicode"), _live_flags())
        deadline = time.monotonic() + timeout
        while _live_disk(dom, target) is not None:
            if time.monotonic() > deadline:
                raise HypervisorError(
                    f"detach disk failed on host {uri} for domain '{spec.name}' ({spec.uuid}): the guest "
                    f"has not released {target} after {timeout:.0f}s. Unmount it inside the guest (or stop "
                    "the VM), then retry the detach.",
                    uri=uri,
                    domain=spec.name,
                )
            time.sleep(poll)


def resize_disk_live(uri: str, spec: DomainSpec, target: str, size_bytes: int) -> None:
    """Grow disk `target` of the running domain: qemu holds its file, so qemu resizes it."""
    conn = connection(uri)
    with _libvirt_errors("resize disk", uri, spec):
        dom = _running_domain(conn, uri, spec, "resize disk")
        dom.blockResize(target, size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
