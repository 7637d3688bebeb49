"""`DomainSpec` and `DiskSpec`: a VM and its volumes as the database knows them, checked on creation.

Plain data with no libvirt calls, so every other module of the package (errors included) can name them.
"""

from __future__ import annotations

import os
import re
import uuid as uuid_lib
from dataclasses import dataclass, field

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
