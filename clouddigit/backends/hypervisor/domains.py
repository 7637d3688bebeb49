"""Domains on a host: the domain XML for a `DomainSpec`, and the domain's lifecycle.

`ensure_domain` defines or redefines the host's domain from the spec (the row is the truth); `state`,
`start`, `stop`, `remove` and `adopt_state` act on it.
"""

from __future__ import annotations

import logging
import time
import uuid as uuid_lib
import xml.etree.ElementTree as ET
from typing import Literal

import libvirt

from .connections import _is_test_driver, connection
from .errors import HypervisorError, _libvirt_errors
from .specs import DomainSpec

logger = logging.getLogger(__name__)

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"

DomainType = Literal["test", "qemu", "kvm"]
DomainState = Literal["running", "paused", "stopping", "stopped", "crashed", "suspended", "unknown"]


# --- Domain description ---------------------------------------------------------------------------------


def domain_xml(spec: DomainSpec, domain_type: DomainType) -> str:
    """Domain XML for the test driver (`test`) or real qemu (`qemu` under TCG, `kvm`)."""
    real_qemu = domain_type in ("qemu", "kvm")
    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = spec.name
    ET.SubElement(domain, "uuid").text = spec.uuid
    ET.SubElement(domain, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(domain, "vcpu").text = str(spec.vcpus)
    os_element = ET.SubElement(domain, "os")
    ET.SubElement(os_element, "type", arch="x86_64").text = "hvm"
    if real_qemu:
        # ACPI is what a graceful shutdown (virDomainShutdown) sends the guest.
        features = ET.SubElement(domain, "features")
        ET.SubElement(features, "acpi")
        ET.SubElement(features, "apic")
    devices = ET.SubElement(domain, "devices")
    for disk in spec.disks:
        disk_element = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk_element, "driver", name="qemu", type=disk.fmt)
        ET.SubElement(disk_element, "source", file=disk.path)
        ET.SubElement(disk_element, "target", dev=disk.target_dev, bus=disk.bus)
        if disk.boot:
            ET.SubElement(disk_element, "boot", order="1")
    if any(disk.bus == "scsi" for disk in spec.disks):
        ET.SubElement(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    if real_qemu:
        channel = ET.SubElement(devices, "channel", type="unix")
        ET.SubElement(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    return ET.tostring(domain, encoding="unicode")


def _domain_type(conn: libvirt.virConnect) -> DomainType:
    if _is_test_driver(conn):
        return "test"
    caps = ET.fromstring(conn.getCapabilities())
    has_kvm = caps.find("./guest/arch[@name='x86_64']/domain[@type='kvm']") is not None
    return "kvm" if has_kvm else "qemu"


def _config_of_spec(spec: DomainSpec) -> tuple:
    disks = sorted((d.target_dev, d.bus, d.path, d.fmt, d.boot) for d in spec.disks)
    return spec.vcpus, spec.memory_mib * 1024, disks


def _config_of_domain(dom: libvirt.virDomain) -> tuple:
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    disks = []
    for disk in root.findall("./devices/disk[@device='disk']"):
        target = disk.find("target")
        source = disk.find("source")
        driver = disk.find("driver")
        disks.append(
            (
                target.get("dev") if target is not None else None,
                target.get("bus") if target is not None else None,
                source.get("file") if source is not None else None,
                driver.get("type") if driver is not None else None,
                disk.find("boot") is not None,
            )
        )
    # libvirt writes <memory> in KiB whatever unit it was defined with.
    return int(root.findtext("vcpu", "0")), int(root.findtext("memory", "0")), sorted(disks)


# --- Domains and lifecycle ------------------------------------------------------------------------------


def _lookup(conn: libvirt.virConnect, spec: DomainSpec) -> libvirt.virDomain | None:
    for lookup, key in ((conn.lookupByUUIDString, spec.uuid), (conn.lookupByName, spec.name)):
        try:
            return lookup(key)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() is None:
                # The error was wiped before libvirt-python read it: a garbage-collected libvirt object
                # freed in between resets the thread's last error. Ask again without an error path.
                return _lookup_by_listing(conn, spec)
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    return None


def _lookup_by_listing(conn: libvirt.virConnect, spec: DomainSpec) -> libvirt.virDomain | None:
    domains = conn.listAllDomains()
    by_uuid = [dom for dom in domains if dom.UUIDString() == spec.uuid]
    by_name = [dom for dom in domains if dom.name() == spec.name]
    return (by_uuid or by_name or [None])[0]


def _rename(
    conn: libvirt.virConnect, dom: libvirt.virDomain, spec: DomainSpec, uri: str
) -> libvirt.virDomain:
    # The UUID is the identity; the name is cosmetic, so a refused rename (qemu refuses it for a
    # domain with snapshots) is logged and the domain keeps its old name.
    try:
        dom.rename(spec.name)
    except libvirt.libvirtError as exc:
        logger.warning("domain %s on %s keeps its name %s: %s", spec.uuid, uri, dom.name(), exc)
        return dom
    return conn.lookupByUUIDString(spec.uuid)  # the old handle keeps reporting the old name


def ensure_domain(uri: str, spec: DomainSpec) -> libvirt.virDomain:
    """The host's domain for `spec`: defined if missing, redefined if its disks or size changed.

    Idempotent. A running domain keeps its live configuration; the redefined one applies from its
    next start (on real qemu, disk changes of a running VM come from libvirt's own snapshot calls).
    """
    conn = connection(uri)
    with _libvirt_errors("define domain", uri, spec):
        dom = _lookup(conn, spec)
        if dom is None:
            logger.info("defining domain %s (%s) on %s", spec.name, spec.uuid, uri)
            return conn.defineXML(domain_xml(spec, _domain_type(conn)))
        if uuid_lib.UUID(dom.UUIDString()) != uuid_lib.UUID(spec.uuid):
            raise HypervisorError(
                f"define domain failed on host {uri} for domain '{spec.name}' ({spec.uuid}): the host "
                f"already has a different domain of that name ({dom.UUIDString()}). Undefine the stale "
                "domain on the host or rename the VM.",
                uri=uri,
                domain=spec.name,
            )
        if dom.name() != spec.name and not dom.isActive():
            dom = _rename(conn, dom, spec, uri)
        if _config_of_domain(dom) != _config_of_spec(spec):
            logger.info("redefining domain %s (%s) on %s: configuration changed", spec.name, spec.uuid, uri)
            # libvirt refuses a second name for one UUID; a running domain is renamed once it stops.
            current = DomainSpec(dom.name(), spec.uuid, spec.vcpus, spec.memory_mib, list(spec.disks))
            dom = conn.defineXML(domain_xml(current, _domain_type(conn)))
        return dom


_STATES: dict[int, DomainState] = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",  # running, waiting on a resource
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


def state(uri: str, spec: DomainSpec) -> DomainState:
    """The domain's state on the host: running, paused, stopping, stopped, crashed, suspended, unknown."""
    dom = ensure_domain(uri, spec)
    with _libvirt_errors("read domain state", uri, spec):
        code, _reason = dom.state()
    return _STATES.get(code, "unknown")


def start(uri: str, spec: DomainSpec) -> Literal["started", "resumed", "already_running"]:
    """Boot the domain (or resume it when paused); harmless when it already runs."""
    dom = ensure_domain(uri, spec)
    with _libvirt_errors("start domain", uri, spec):
        code, _reason = dom.state()
        if code == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
            return "resumed"
        if dom.isActive():
            return "already_running"
        dom.create()
        return "started"


def remove(uri: str, spec: DomainSpec) -> None:
    """Power the domain off and remove its definition from the host (its disk files are the caller's)."""
    conn = connection(uri)
    with _libvirt_errors("remove domain", uri, spec):
        dom = _lookup(conn, spec)
        if dom is None:
            return
        if dom.isActive():
            dom.destroy()
        dom.undefine()


def adopt_state(uri: str, spec: DomainSpec, running: bool) -> None:
    """On the test driver, make the domain run (or not) as the database says it does.

    A fake host has no memory of its own: every new connection (a new worker process) starts with its
    domains shut off, while the rows say which VMs run. A real host is left alone: its state is the truth
    there, and a VM that is not running is reported as such by the operation that needs it.
    """
    if not _is_test_driver(connection(uri)):
        return
    if running:
        start(uri, spec)
    elif state(uri, spec) == "running":
        stop(uri, spec)


def stop(
    uri: str, spec: DomainSpec, graceful_timeout: float = 60.0, poll_interval: float = 0.5
) -> Literal["shutdown", "destroyed", "already_stopped"]:
    """Ask the guest to shut down (ACPI); power it off if it has not stopped after `graceful_timeout`."""
    dom = ensure_domain(uri, spec)
    with _libvirt_errors("stop domain", uri, spec):
        if not dom.isActive():
            return "already_stopped"
        try:
            dom.shutdown()
        except libvirt.libvirtError:
            if not dom.isActive():  # it stopped between the check and the call
                return "shutdown"
            raise
        deadline = time.monotonic() + graceful_timeout
        while dom.isActive():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning(
                    "domain %s on %s ignored shutdown for %ss; destroying", spec.name, uri, graceful_timeout
                )
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    if dom.isActive():
                        raise
                return "destroyed"
            time.sleep(min(poll_interval, remaining))
        return "shutdown"
