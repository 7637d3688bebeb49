"""`clouddigit compute vm ...`: list VMs and create one from an image. (`vm restore`, from a VM snapshot,
is in snapshots.py.)"""

from __future__ import annotations

import argparse

from clouddigit.cli.client import Client
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
    add_output_option,
    add_where_options,
    header,
    tags,
    where,
)
from clouddigit.cli.output import Column, show

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


def add_commands(vms: Subcommands) -> None:
    add_list_command(vms, VMS, "list VMs")
    create = vms.add_parser(
        "create",
        help="create a VM from an image",
        description="Create a VM whose boot volume is a copy of an image (see `clouddigit compute image "
        "picker`), started once it is defined unless --no-start.",
    )
    create.add_argument("--name", required=True)
    create.add_argument("--image", required=True, metavar="IMAGE", help="the image's name or id")
    create.add_argument("--flavor", required=True, help="e.g. std-2x4")
    create.add_argument("--vpc", required=True)
    add_where_options(create)
    create.add_argument(
        "--boot-size-gib", type=int, metavar="GIB", help="boot volume size (default: the image's size)"
    )
    create.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    create.add_argument("--no-start", action="store_true", help="define the VM but leave it stopped")
    add_output_option(create)
    create.set_defaults(handler=create_vm, parser=create)


def create_vm(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {
        **where(client, args),
        "name": args.name,
        "image": args.image,
        "flavor": args.flavor,
        "vpc": args.vpc,
        "tags": tags(args, args.tag, "--tag"),
        "start": not args.no_start,
    }
    if args.boot_size_gib:
        body["boot_size_gib"] = args.boot_size_gib
    vm = client.create(VMS.path, body)
    show(vm, args.output, VMS.columns, header=header(VMS))
