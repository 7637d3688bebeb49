"""The flavors a VM can have. Bare-metal flavors (`bm-*`) run on dedicated hosts; a snapshot taken
on one kind and restored onto the other is the spec's "Kernel panic on init" case."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flavor:
    name: str
    vcpus: int
    memory_mib: int
    bare_metal: bool = False

    @property
    def memory_gib(self) -> int:
        return self.memory_mib // 1024


FLAVORS = {
    flavor.name: flavor
    for flavor in [
        Flavor("std-1x2", 1, 2048),
        Flavor("std-2x4", 2, 4096),
        Flavor("std-4x8", 4, 8192),
        Flavor("mem-4x32", 4, 32768),
        Flavor("bm-c1", 32, 131072, bare_metal=True),
    ]
}
FLAVOR_CHOICES = [(name, name) for name in FLAVORS]
