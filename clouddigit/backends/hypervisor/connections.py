"""This process's connections to the hosts' libvirt daemons, and the facts a host reports.

One long-lived connection per (process, URI), reopened when dead and never shared across `os.fork()`.
A `test:///<file>.xml` URI is libvirt's test driver: `_is_test_driver` is how the other modules tell a
fake host from a real one.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import libvirt

from .errors import HypervisorError, _libvirt_errors

logger = logging.getLogger(__name__)

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
