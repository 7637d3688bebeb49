"""`clouddigit compute volume ...`: the volumes of your VMs."""

from __future__ import annotations

from clouddigit.cli.common import (
    NAME,
    PROJECT,
    REGION,
    STATE,
    TAG,
    ListFilter,
    Resource,
    Subcommands,
    add_list_command,
)
from clouddigit.cli.output import Column, binary_size

VOLUMES = Resource(
    path="compute/volumes/",
    columns=(
        Column("ID", "id"),
        Column("NAME", "name"),
        Column("PROJECT", "project"),
        Column("REGION", "region"),
        Column("STATE", "state"),
        Column("SIZE", "size_bytes", binary_size),
        Column("VM", "vm_name"),
        Column("DEVICE", "device"),
        Column("BOOTABLE", "bootable"),
        Column("TAGS", "tags"),
    ),
    filters=(
        PROJECT,
        REGION,
        STATE,
        ListFilter("vm", "attached to the VM of this name", "VM_NAME"),
        TAG,
        NAME,
    ),
)


def add_commands(volumes: Subcommands) -> None:
    add_list_command(volumes, VOLUMES, "list volumes")
