"""Is every backend a console operation depends on answering? Checked live, each with a timing."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from clouddigit.backends import hypervisor, objectstore
from clouddigit.compute.models import Host, Region


@dataclass
class Check:
    region: str
    kind: str
    target: str
    ok: bool
    detail: str
    millis: int


def _timed(region: str, kind: str, target: str, probe) -> Check:
    started = time.monotonic()
    try:
        detail, ok = probe() or "", True
    except Exception as error:  # a health page reports every failure instead of raising it
        detail, ok = str(error), False
    return Check(region, kind, target, ok, detail, round((time.monotonic() - started) * 1000))


def _volume_dir_writable(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise PermissionError(f"{path} is not writable by this process")
    return ""


def backend_health() -> list[Check]:
    checks = []
    hosts_by_region: dict[str, list[Host]] = {}
    for host in Host.objects.order_by("name"):
        hosts_by_region.setdefault(host.region_id, []).append(host)
    for region in Region.objects.all():
        for host in hosts_by_region.get(region.slug, []):
            checks.append(
                _timed(
                    region.slug,
                    f"libvirt {host.name}",
                    host.libvirt_uri,
                    lambda uri=host.libvirt_uri: hypervisor.host_info(uri) and "",
                )
            )
        store = objectstore.ObjectStore.for_region(region.config)
        checks.append(
            _timed(
                region.slug, "object store", f"{region.s3_endpoint}/{region.s3_bucket}", store.check_bucket
            )
        )
        checks.append(
            _timed(
                region.slug,
                "volume folder",
                region.volume_dir,
                lambda path=region.volume_dir: _volume_dir_writable(path),
            )
        )
    return checks
