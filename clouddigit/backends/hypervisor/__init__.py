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
them through this package (`create_live_overlays`, `pull_into_active`, `commit_into_base`) or, for a
stopped VM and on the test driver, with qemu-img on the files.

Callers use the names below as `hypervisor.X`. Each module imports only the ones listed before it:

- `specs`: `DomainSpec`/`DiskSpec`, the VM as the database knows it.
- `errors`: `HypervisorError` and the wrapping of libvirt's errors.
- `connections`: this process's connection to each host, and `host_info`.
- `domains`: domain XML, `ensure_domain` and the lifecycle.
- `guest_freeze`: guest filesystem freeze and thaw through qemu-guest-agent.
- `snapshot_metadata`: snapshot records in libvirt.
- `live`: overlays and block jobs on a running VM's disk chains, and disks plugged in and out of it.
"""

from __future__ import annotations

from .connections import connection, disconnect, host_info
from .domains import (
    GUEST_AGENT_CHANNEL,
    DomainState,
    DomainType,
    adopt_state,
    domain_xml,
    ensure_domain,
    remove,
    start,
    state,
    stop,
)
from .errors import HypervisorError
from .guest_freeze import AGENT_NOT_RESPONDING, Consistency, FreezeResult, freeze, frozen, thaw
from .live import (
    BlockJobOutcome,
    LiveOverlays,
    attach_disk_live,
    commit_into_base,
    create_live_overlays,
    detach_disk_live,
    live_chain,
    live_overlays_supported,
    pull_into_active,
    replace_path,
    resize_disk_live,
)
from .snapshot_metadata import (
    create_snapshot_metadata,
    delete_snapshot_metadata,
    list_snapshot_metadata,
    snapshot_xml,
)
from .specs import DiskSpec, DomainSpec

__all__ = [
    "AGENT_NOT_RESPONDING",
    "GUEST_AGENT_CHANNEL",
    "BlockJobOutcome",
    "Consistency",
    "DiskSpec",
    "DomainSpec",
    "DomainState",
    "DomainType",
    "FreezeResult",
    "HypervisorError",
    "LiveOverlays",
    "adopt_state",
    "attach_disk_live",
    "commit_into_base",
    "connection",
    "create_live_overlays",
    "create_snapshot_metadata",
    "delete_snapshot_metadata",
    "detach_disk_live",
    "disconnect",
    "domain_xml",
    "ensure_domain",
    "freeze",
    "frozen",
    "host_info",
    "list_snapshot_metadata",
    "live_chain",
    "live_overlays_supported",
    "pull_into_active",
    "remove",
    "replace_path",
    "resize_disk_live",
    "snapshot_xml",
    "start",
    "state",
    "stop",
    "thaw",
]
