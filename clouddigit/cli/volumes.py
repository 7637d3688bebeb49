"""`clouddigit compute volume ...`: the volumes of your VMs: list, create, attach, detach, resize,
delete. A volume is named by `--volume`, its id or (when unique) its name."""

from __future__ import annotations

import argparse
import urllib.parse

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
    add_named_command,
    add_output_option,
    add_wait_option,
    add_where_options,
    header,
    resource_url,
    settled,
    tags,
    where,
)
from clouddigit.cli.output import Column, binary_size, show

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
    create = volumes.add_parser(
        "create", help="create an empty volume", description="Create an empty volume of --size-gib GiB."
    )
    create.add_argument("--name", required=True)
    create.add_argument("--size-gib", type=int, required=True, metavar="GIB")
    add_where_options(create)
    create.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    add_wait_option(create, "made its file")
    add_output_option(create)
    create.set_defaults(handler=create_volume, parser=create)

    attach = _volume_command(
        volumes,
        "attach",
        "attach to a VM of the volume's project and region: as its boot disk (--boot, the VM stopped) or "
        "as a secondary disk at --device or the next free one",
        attach_volume,
    )
    attach.add_argument("--vm", required=True, metavar="VM", help="the VM's id or name")
    attach.add_argument("--boot", action="store_true", help="as the boot disk (vda, or sda on bare metal)")
    attach.add_argument("--device", default="", help="vdb, vdc ... (default: the next free one)")
    _volume_command(
        volumes,
        "detach",
        "detach from its VM: `detaching` until the hypervisor has unplugged it (a boot disk only from a "
        "stopped VM)",
        detach_volume,
    )
    resize = _volume_command(volumes, "resize", "grow the volume (volumes never shrink)", resize_volume)
    resize.add_argument("--size-gib", type=int, required=True, metavar="GIB", help="the new size")
    add_wait_option(resize, "grown it")
    delete = _volume_command(
        volumes, "delete", "delete a detached volume and its data, for good", delete_volume, output=False
    )
    delete.add_argument("--confirm", required=True, metavar="NAME", help="the volume's name, typed again")
    delete.add_argument(
        "--snapshots",
        choices=("keep", "delete"),
        help="what happens to its snapshots (required when it has some): keep them, as EBS does, or "
        "delete them with it",
    )


def _volume_command(
    parent: Subcommands, name: str, help: str, handler, *, output: bool = True
) -> argparse.ArgumentParser:
    return add_named_command(parent, name, help, handler, option="--volume", what="volume", output=output)


def _volume_url(client: Client, args: argparse.Namespace, action: str = "") -> str:
    return resource_url(client, VOLUMES, "volume", args.volume, action)


def _show(volume: dict, output: str) -> None:
    show(volume, output, VOLUMES.columns, header=header(VOLUMES))


def create_volume(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {
        **where(client, args),
        "name": args.name,
        "size_gib": args.size_gib,
        "tags": tags(args, args.tag, "--tag"),
    }
    volume = client.create(VOLUMES.path, body)
    if args.wait:
        volume = settled(client, VOLUMES, volume, ("creating",))
    _show(volume, args.output)


def attach_volume(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {"vm": args.vm, "boot": args.boot, "device": args.device}
    _show(client.create(_volume_url(client, args, "attach"), body), args.output)


def detach_volume(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show(client.create(_volume_url(client, args, "detach"), {}), args.output)


def resize_volume(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    volume = client.create(_volume_url(client, args, "resize"), {"size_gib": args.size_gib})
    if args.wait:
        volume = settled(client, VOLUMES, volume, ("resizing",))
    _show(volume, args.output)


def delete_volume(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    query = urllib.parse.urlencode({"confirm": args.confirm, "snapshots": args.snapshots or ""})
    volume = client.delete(f"{_volume_url(client, args)}?{query}") or {}
    kept = {"keep": "; its snapshots are kept", "delete": "; its snapshots are deleted with it"}
    print(f"Deleting volume {volume.get('name')} ({volume.get('id')}){kept.get(args.snapshots, '')}")
