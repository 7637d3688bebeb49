"""`clouddigit compute vm ...`: list VMs, create one from an image, tag and delete one. (`vm restore`,
from a VM snapshot, is in snapshots.py.)"""

from __future__ import annotations

import argparse
import sys
import urllib.parse

from clouddigit.cli.client import Client
from clouddigit.cli.common import (
    NAME,
    PROJECT,
    REGION,
    STATE,
    TAG,
    CLIError,
    ListFilter,
    Resource,
    Subcommands,
    add_list_command,
    add_output_option,
    add_wait_option,
    add_where_options,
    header,
    resolve,
    settled,
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
    add_wait_option(create, "copied the image, defined the VM and started it (unless --no-start)")
    add_output_option(create)
    create.set_defaults(handler=create_vm, parser=create)

    tag = _vm_command(vms, "tag", "set and remove a VM's tags (they decide which snapshot policies cover it)")
    tag.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    tag.add_argument("--unset", action="append", default=[], metavar="KEY", help="repeatable")
    tag.set_defaults(handler=tag_vm)

    delete = _vm_command(
        vms,
        "delete",
        "delete a stopped VM; unless named, its boot volume is deleted and data volumes are kept, detached",
    )
    delete.add_argument("--confirm", required=True, metavar="NAME", help="the VM's name")
    delete.add_argument(
        "--keep-volume", action="append", default=[], metavar="VOLUME", help="keep it, detached (repeatable)"
    )
    delete.add_argument(
        "--delete-volume", action="append", default=[], metavar="VOLUME", help="delete it too (repeatable)"
    )
    delete.set_defaults(handler=delete_vm)


def _vm_command(vms: Subcommands, name: str, help: str) -> argparse.ArgumentParser:
    """A command acting on one VM, named by VM: its id, or its name when unique (--project narrows)."""
    parser = vms.add_parser(name, help=help, description=help)
    parser.add_argument("vm", metavar="VM", help="the VM's id, or its name when unique")
    parser.add_argument("--project", metavar="ACCOUNT/PROJECT", help="look the name up in this project")
    add_output_option(parser)
    parser.set_defaults(parser=parser)
    return parser


def _vm_path(client: Client, args: argparse.Namespace) -> str:
    return f"{VMS.path}{resolve(client, VMS, 'VM', args.vm, args.project)}/"


def tag_vm(args: argparse.Namespace) -> None:
    """A JSON merge patch: `--set env=prod` sends {"env": "prod"}, `--unset env` sends {"env": null}."""
    patch: dict[str, str | None] = dict(tags(args, args.set, "--set"))
    for key in args.unset:
        if key in patch:
            args.parser.error(f"tag {key!r} is both set and unset")
        patch[key] = None
    if not patch:
        args.parser.error("say what to change: --set KEY=VALUE and/or --unset KEY")
    client = Client.from_environment()
    vm = client.update(_vm_path(client, args), {"tags": patch})
    show(vm, args.output, VMS.columns, header=header(VMS))


def delete_vm(args: argparse.Namespace) -> None:
    both = set(args.keep_volume) & set(args.delete_volume)
    if both:
        args.parser.error(f"volume {sorted(both)[0]!r} is both kept and deleted")
    client = Client.from_environment()
    query = urllib.parse.urlencode(
        [("confirm", args.confirm)]
        + [("keep_volume", name) for name in args.keep_volume]
        + [("delete_volume", name) for name in args.delete_volume],
    )
    vm = client.delete(f"{_vm_path(client, args)}?{query}")
    if vm is None:
        raise CLIError("BadResponse", "the console answered the delete without the VM")
    show(vm, args.output, VMS.columns, header=header(VMS))
    note = f"note: VM {vm['name']} is {vm['state']}; it leaves `vm list` once its worker is done"
    print(note, file=sys.stderr)


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
    if args.wait:
        vm = settled(client, VMS, vm, ("creating", "starting"))
    show(vm, args.output, VMS.columns, header=header(VMS))
