"""What the CLI lists: each resource's API path, its table columns and its list filters.

A new resource (snapshots, images...) is one more entry here plus one `add_list_command` call in main.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from clouddigit.cli.output import Column, binary_size


@dataclass(frozen=True)
class ListFilter:
    """`--<name> VALUE` on the command line becomes `?<name>=VALUE` on the API list."""

    name: str
    help: str
    metavar: str = "VALUE"


@dataclass(frozen=True)
class Resource:
    path: str
    columns: tuple[Column, ...]
    filters: tuple[ListFilter, ...]


PROJECT = ListFilter("project", "account/project (or a project id)", "ACCOUNT/PROJECT")
REGION = ListFilter("region", "region slug, e.g. bd-dha-1", "REGION")
STATE = ListFilter("state", "state, e.g. running", "STATE")
TAG = ListFilter("tag", "carries this tag", "KEY=VALUE")
NAME = ListFilter("name", "name contains", "TEXT")

VMS = Resource(
    path="compute/vms/",
    columns=(
        Column("ID", "id"),
        Column("NAME", "name"),
        Column("PROJECT", "project"),
        Column("REGION", "region"),
        Column("STATE", "state"),
        Column("FLAVOR", "flavor"),
        Column("VPC", "vpc"),
        Column("TAGS", "tags"),
    ),
    filters=(
        PROJECT,
        REGION,
        STATE,
        ListFilter("flavor", "flavor, e.g. std-2x4", "FLAVOR"),
        ListFilter("vpc", "VPC name", "VPC"),
        TAG,
        NAME,
    ),
)

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

ROLE_BINDINGS = Resource(
    path="iam/role-bindings/",
    columns=(
        Column("ID", "id"),
        Column("ROLE", "role"),
        Column("USER", "user"),
        Column("GROUP", "group"),
        Column("ACCOUNT", "account"),
        Column("PROJECT", "project"),
        Column("GRANTED_BY", "granted_by"),
    ),
    filters=(
        ListFilter("account", "account slug (its account-wide and project bindings)", "ACCOUNT"),
        PROJECT,
        ListFilter("user", "username", "USER"),
        ListFilter("group", "group name", "GROUP"),
        ListFilter("role", "role, e.g. image.publisher", "ROLE"),
    ),
)
