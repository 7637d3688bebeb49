"""Hypervisor adapter: the only code that talks to libvirt.

No Django imports, so Celery tasks, management commands and tests use it alike. Every function takes
the host's libvirt URI and, where a VM is involved, a `DomainSpec` built from the database row. The
row is the truth: a fresh connection (another worker process, a restarted libvirtd, or the test
driver, whose state lives only in the connection that made it) may not know the domain yet, so each
operation first calls `ensure_domain`.

Embedded/CI hosts are libvirt's test driver, `test:///<abs path>/<region>-host-N.xml`. It supports
domains, lifecycle, internal snapshots (also with QUIESCE) and fsFreeze/fsThaw; it refuses disk-only
and external snapshots, qemuAgentCommand and agentSetResponseTimeout. Production hosts are
`qemu+ssh://` / `qemu+tls://` URIs; the slow test (tests/slow/test_real_qemu.py) drives real qemu under
TCG through a non-root user's session daemon, `qemu+unix:///session?socket=...`.

A running VM's disk chains belong to qemu: `live_overlays_supported` tells the caller whether to change
them through this module (`create_live_overlays`, `pull_into_active`, `commit_into_base`) or, for a
stopped VM and on the test driver, with qemu-img on the files.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import uuid as uuid_lib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import libvirt

logger = logging.getLogger(__name__)

AGENT_NOT_RESPONDING = "guest agent not responding"
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"

DomainType = Literal["test", "qemu", "kvm"]
DomainState = Literal["running", "paused", "stopping", "stopped", "crashed", "suspended", "unknown"]
Consistency = Literal["application", "crash"]


def _ignore_libvirt_error(_ctx: object, _error: object) -> None:
    """libvirt prints every error to stderr unless a handler is set; ours are raised instead."""


libvirt.registerErrorHandler(_ignore_libvirt_error, None)


class HypervisorError(Exception):
    """A libvirt call failed. The message names the host URI, the domain and what to do next."""

    def __init__(self, message: str, *, uri: str = "", domain: str = "", code: int | None = None):
        super().__init__(message)
        self.message = message
        self.uri = uri
        self.domain = domain
        self.code = code


def _hint(code: int | None) -> str:
    unreachable = {"VIR_ERR_SYSTEM_ERROR", "VIR_ERR_NO_CONNECT", "VIR_ERR_RPC", "VIR_ERR_INVALID_CONN"}
    hints = [
        (
            unreachable,
            "Check that libvirtd runs on that host and that this worker can reach it (network, SSH key "
            "or TLS certificate); the task's retry reconnects.",
        ),
        ({"VIR_ERR_AUTH_FAILED", "VIR_ERR_AUTH_CANCELLED"}, "Check this worker's credentials for that host."),
        (
            {"VIR_ERR_OPERATION_INVALID"},
            "The domain is not in a state that allows this; compare `virsh domstate` on the host with "
            "the VM's status in the console.",
        ),
        (
            {"VIR_ERR_AGENT_UNRESPONSIVE"},
            "Check qemu-guest-agent inside the guest (`systemctl status qemu-guest-agent`).",
        ),
        (
            {"VIR_ERR_NO_SUPPORT", "VIR_ERR_ARGUMENT_UNSUPPORTED", "VIR_ERR_CONFIG_UNSUPPORTED"},
            "The libvirt driver on that host does not support this; check the host's libvirt version "
            "and driver.",
        ),
        (
            {"VIR_ERR_INVALID_ARG"},
            "That host's libvirt driver refused the call's arguments (often flags it does not support).",
        ),
        ({"VIR_ERR_OPERATION_TIMEOUT"}, "The host is busy; retry later."),
        ({"VIR_ERR_XML_ERROR", "VIR_ERR_XML_DETAIL"}, "The host rejected the definition; see the detail."),
    ]
    for names, text in hints:
        if code is not None and code in {getattr(libvirt, name, None) for name in names}:
            return text
    return "See libvirtd's log on that host."


@contextmanager
def _libvirt_errors(action: str, uri: str, spec: DomainSpec | None = None) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise _wrap(exc, action, uri, spec) from exc


def _wrap(exc: libvirt.libvirtError, action: str, uri: str, spec: DomainSpec | None) -> HypervisorError:
    code = exc.get_error_code()
    where = f"on host {uri}"
    if spec is not None:
        where += f" for domain '{spec.name}' ({spec.uuid})"
    detail = exc.get_error_message() or str(exc)
    return HypervisorError(
        f"{action} failed {where}: {detail}. {_hint(code)}",
        uri=uri,
        domain=spec.name if spec else "",
        code=code,
    )


# --- Connections ----------------------------------------------------------------------------------------

# Keyed by (pid, uri): a connection inherited through os.fork() (Celery's prefork pool) shares its
# socket with the parent, so the child neither uses nor closes it; it stays referenced here so that
# garbage collection never sends a close on the parent's socket.
_connections: dict[tuple[int, str], libvirt.virConnect] = {}
_registry_lock = threading.Lock()
_uri_locks: dict[tuple[int, str], threading.Lock] = {}


def _reset_locks_after_fork() -> None:
    # Another thread of the parent may have held a lock at fork time; the child gets fresh ones.
    global _registry_lock
    _registry_lock = threading.Lock()
    _uri_locks.clear()


os.register_at_fork(after_in_child=_reset_locks_after_fork)


def connection(uri: str) -> libvirt.virConnect:
    """This process's long-lived connection to `uri`, opened on first use and reopened when dead."""
    key = (os.getpid(), uri)
    with _registry_lock:
        uri_lock = _uri_locks.setdefault(key, threading.Lock())
    # One lock per URI, so a slow connect to one host does not hold up the others.
    with uri_lock:
        conn = _connections.get(key)
        if conn is not None and _is_alive(conn):
            return conn
        if conn is not None:
            logger.warning("libvirt connection to %s is dead; reconnecting", uri)
            _close_quietly(conn)
        conn = _open(uri)
        _connections[key] = conn
        return conn


def disconnect(uri: str) -> None:
    """Close this process's connection to `uri`, if any (a host taken out of service, a test's daemon)."""
    key = (os.getpid(), uri)
    with _registry_lock:
        conn = _connections.pop(key, None)
    if conn is not None:
        _close_quietly(conn)


def _is_alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _close_quietly(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


def _open(uri: str) -> libvirt.virConnect:
    host_file = _test_driver_file(uri)
    if host_file is not None and not host_file.is_file():
        # libxml2 would print its own warning and libvirt reports a parse error; say what is wrong.
        raise HypervisorError(
            f"connect failed on host {uri}: host definition file {host_file} does not exist. "
            "Check the region's LIBVIRT_URIS setting or restore the file.",
            uri=uri,
        )
    with _libvirt_errors("connect", uri):
        return libvirt.open(uri)


def _test_driver_file(uri: str) -> Path | None:
    parts = urlsplit(uri)
    if parts.scheme != "test" or parts.path in ("", "/default"):
        return None
    return Path(parts.path)


def _is_test_driver(conn: libvirt.virConnect) -> bool:
    return conn.getType().lower() == "test"


# --- Domain description ---------------------------------------------------------------------------------

_BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd"}
_FORMATS = ("qcow2", "raw")


@dataclass(frozen=True)
class DiskSpec:
    """One volume attached to a VM: `path` is the volume's active (top) layer on the host."""

    path: str
    target_dev: str
    bus: str = "virtio"
    fmt: str = "qcow2"
    boot: bool = False

    def __post_init__(self) -> None:
        if self.bus not in _BUS_PREFIX:
            raise ValueError(f"disk bus must be one of {sorted(_BUS_PREFIX)}, not {self.bus!r}")
        prefix = _BUS_PREFIX[self.bus]
        if not re.fullmatch(prefix + "[a-z]{1,3}", self.target_dev):
            raise ValueError(
                f"disk on bus {self.bus!r} needs a target like {prefix}a, not {self.target_dev!r}"
            )
        if self.fmt not in _FORMATS:
            raise ValueError(f"disk format must be one of {_FORMATS}, not {self.fmt!r}")
        if not os.path.isabs(self.path):
            raise ValueError(f"disk path must be absolute: {self.path!r}")


@dataclass(frozen=True)
class DomainSpec:
    """A VM as the database knows it; `uuid` is the VM's UUID as a string."""

    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    disks: list[DiskSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        uuid_lib.UUID(self.uuid)
        if self.vcpus < 1 or self.memory_mib < 1:
            raise ValueError("a domain needs at least 1 vCPU and 1 MiB of memory")
        targets = [disk.target_dev for disk in self.disks]
        if len(set(targets)) != len(targets):
            raise ValueError(f"disk targets must be unique: {targets}")
        if sum(disk.boot for disk in self.disks) > 1:
            raise ValueError("at most one disk can be the boot disk")


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


# --- Guest filesystem freeze ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FreezeResult:
    """What a freeze attempt achieved; `reason` says why it is only crash-consistent."""

    frozen: bool
    consistency: Consistency
    reason: str = ""
    filesystems: int = 0
    elapsed_seconds: float = 0.0


@dataclass
class _Outcome:
    finished: bool
    value: Any = None
    error: BaseException | None = None


def _run_bounded(
    call: Callable[[], Any], timeout_seconds: float, name: str, on_late_success: Callable[[Any], None]
) -> _Outcome:
    """Run a blocking libvirt call in a daemon thread and wait at most `timeout_seconds` for it.

    libvirt releases the GIL during the call, so the caller can give up on it; the call itself
    cannot be cancelled. If it succeeds after the caller gave up, `on_late_success` undoes it.
    A daemon thread (not a ThreadPoolExecutor, whose workers are joined at exit) so that a call
    that never returns cannot keep the worker process from exiting.
    """
    lock = threading.Lock()
    done = threading.Event()
    outcome = _Outcome(finished=False)
    abandoned = False

    def run() -> None:
        try:
            value, error = call(), None
        except BaseException as exc:  # noqa: BLE001 - handed over to the caller
            value, error = None, exc
        with lock:
            outcome.finished, outcome.value, outcome.error = True, value, error
            late = abandoned
        done.set()
        if late and error is None:
            on_late_success(value)

    threading.Thread(target=run, name=name, daemon=True).start()
    done.wait(timeout_seconds)
    with lock:
        if not outcome.finished:
            abandoned = True
        return _Outcome(outcome.finished, outcome.value, outcome.error)


def _set_agent_timeout(dom: libvirt.virDomain, timeout_seconds: float) -> None:
    # qemu (libvirt >= 5.10) then fails the agent call itself instead of waiting forever; the setting
    # stays on the domain in libvirtd. The test driver refuses it; the thread bound still applies.
    set_timeout = getattr(dom, "agentSetResponseTimeout", None)
    if set_timeout is None:
        return
    try:
        set_timeout(max(1, math.ceil(timeout_seconds)), 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED):
            raise


def _freeze_domain(dom: libvirt.virDomain, timeout_seconds: float, where: str) -> FreezeResult:
    started = time.monotonic()

    def thaw_late_freeze(_count: Any) -> None:
        logger.error("fsFreeze of %s returned after the timeout; thawing the guest", where)
        try:
            dom.fsThaw()
        except libvirt.libvirtError:
            logger.exception("thawing %s after a late fsFreeze failed; run `virsh domfsthaw`", where)

    outcome = _run_bounded(dom.fsFreeze, timeout_seconds, f"fsFreeze {where}", thaw_late_freeze)
    elapsed = time.monotonic() - started
    if not outcome.finished:
        logger.warning("fsFreeze of %s gave no answer within %ss", where, timeout_seconds)
        return FreezeResult(False, "crash", AGENT_NOT_RESPONDING, elapsed_seconds=elapsed)
    if isinstance(outcome.error, libvirt.libvirtError):
        reason = outcome.error.get_error_message() or str(outcome.error)
        logger.warning("fsFreeze of %s failed: %s", where, reason)
        return FreezeResult(False, "crash", reason, elapsed_seconds=elapsed)
    if outcome.error is not None:
        raise outcome.error
    return FreezeResult(True, "application", "", int(outcome.value or 0), elapsed)


def _thaw_domain(dom: libvirt.virDomain, timeout_seconds: float, uri: str, spec: DomainSpec) -> int:
    outcome = _run_bounded(dom.fsThaw, timeout_seconds, f"fsThaw {spec.name}", lambda _count: None)
    if not outcome.finished:
        raise HypervisorError(
            f"thaw failed on host {uri} for domain '{spec.name}' ({spec.uuid}): the guest agent gave "
            f"no answer within {timeout_seconds}s and the guest's filesystems may still be frozen. Run "
            "`virsh domfsthaw` on the host and check qemu-guest-agent in the guest.",
            uri=uri,
            domain=spec.name,
        )
    if isinstance(outcome.error, libvirt.libvirtError):
        raise _wrap(outcome.error, "thaw", uri, spec) from outcome.error
    if outcome.error is not None:
        raise outcome.error
    return int(outcome.value or 0)


def freeze(uri: str, spec: DomainSpec, timeout_seconds: float) -> FreezeResult:
    """Freeze the guest's filesystems through qemu-guest-agent, waiting at most `timeout_seconds`.

    Never raises for agent trouble: the result says whether the guest is frozen (application
    consistency) or why not (crash consistency). A stopped domain cannot be frozen.
    """
    dom = ensure_domain(uri, spec)
    with _libvirt_errors("freeze", uri, spec):
        if not dom.isActive():
            return FreezeResult(False, "crash", "domain is not running")
        _set_agent_timeout(dom, timeout_seconds)
    return _freeze_domain(dom, timeout_seconds, f"{spec.name} on {uri}")


def thaw(uri: str, spec: DomainSpec, timeout_seconds: float) -> int:
    """Thaw the guest's filesystems; returns how many were thawed. Raises `HypervisorError` on failure."""
    dom = ensure_domain(uri, spec)
    return _thaw_domain(dom, timeout_seconds, uri, spec)


@contextmanager
def frozen(uri: str, spec: DomainSpec, timeout_seconds: float) -> Iterator[FreezeResult]:
    """Freeze for the body, thaw on exit (also when the body raises) if the freeze succeeded.

        with frozen(uri, spec, 10) as result:
            take the snapshot
        record result.consistency and result.reason on the snapshot

    A failed thaw after a successful body raises `HypervisorError` (a frozen guest is an outage);
    after a failed body it is added as a note to the body's exception.
    """
    result = freeze(uri, spec, timeout_seconds)
    try:
        yield result
    except BaseException as body_error:
        if result.frozen:
            try:
                thaw(uri, spec, timeout_seconds)
            except HypervisorError as thaw_error:
                logger.error("%s", thaw_error)
                body_error.add_note(str(thaw_error))
        raise
    if result.frozen:
        thaw(uri, spec, timeout_seconds)


# --- Snapshot metadata ----------------------------------------------------------------------------------


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


# --- Live disk chains (real qemu) -----------------------------------------------------------------------
#
# While qemu runs a VM, the VM's qcow2 chains belong to qemu: it holds the active layer's write lock and
# keeps every backing layer write-locked too (qemu-img rebase/commit on them fails with 'Failed to get
# "write" lock'; reads still work). So a snapshot of a running VM asks qemu (through libvirt) to switch
# each disk onto a new overlay, and merging a layer out of a running chain is a qemu block job. For a
# stopped VM, or on the test driver, the caller does the same with qemu-img on the files.


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
        if source is None or source.get("file") is None:
            break
        chain.append(source.get("file"))
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


# --- Hosts ----------------------------------------------------------------------------------------------


def host_info(uri: str) -> dict[str, Any]:
    """Facts for the console's Host row: hostname, cpus, memory_mib, cpu_model, cpu_mhz, hypervisor.

    The test driver reports the machine's own hostname for every fake host, so there the host is
    named after its XML file (`bd-dha-1-host-1`).
    """
    conn = connection(uri)
    with _libvirt_errors("read host facts", uri):
        model, memory_mib, cpus, mhz, *_topology = conn.getInfo()
        host_file = _test_driver_file(uri)
        hostname = host_file.stem if host_file is not None else conn.getHostname()
        version = conn.getLibVersion()
        return {
            "uri": uri,
            "hostname": hostname,
            "cpus": cpus,
            "memory_mib": memory_mib,
            "cpu_model": model,
            "cpu_mhz": mhz,
            "hypervisor": conn.getType(),
            "libvirt_version": f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}",
        }
