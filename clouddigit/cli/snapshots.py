"""`clouddigit compute snapshot ...`: snapshots of volumes and VMs: take, list, show, hold, tag,
diagnose, restore to a new volume or VM (`compute vm restore`), roll back, retry, delete. Policies are
in policies.py."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from typing import Any

from clouddigit.cli.client import Client, CLIError
from clouddigit.cli.common import (
    NAME,
    PROJECT,
    REGION,
    TAG,
    ListFilter,
    Resource,
    Subcommands,
    add_list_command,
    add_named_command,
    add_output_option,
    header,
    resolve,
    resource_url,
    tags,
)
from clouddigit.cli.output import Column, Progress, binary_size, cell, fields, show, table, timestamp
from clouddigit.cli.restores import RESTORES, show_restore
from clouddigit.cli.vms import VMS
from clouddigit.cli.volumes import VOLUMES

COPY_POLL_SECONDS = 1.0


def _volume_names(snapshot: dict) -> list[str]:
    return [disk["volume_name"] for disk in snapshot.get("disks") or []]


def _consistency(snapshot: dict) -> str:
    """What the snapshot got; while it is being taken, what was asked for, with a question mark."""
    return snapshot.get("consistency_achieved") or f"{snapshot.get('consistency_requested')}?"


SNAPSHOTS = Resource(
    path="compute/snapshots/",
    # VM is the third column: the spec's per-VM count pipes the list into `awk '{print $3}'`.
    columns=(
        Column("ID", "id"),
        Column("NAME", "name"),
        Column("VM", "vm_name"),
        Column("VOLUMES", "disks", pick=_volume_names),
        Column("STATE", "state"),
        Column("CONSISTENCY", "consistency_achieved", pick=_consistency),
        Column("CREATED", "created_at", timestamp),
        Column("POLICY", "policy_name"),
        Column("TAGS", "tags"),
    ),
    filters=(
        ListFilter("vm", "of the VM with this id or name", "VM"),
        ListFilter("volume", "capturing the volume with this id or name", "VOLUME"),
        ListFilter("policy", "created by this snapshot policy", "POLICY"),
        ListFilter("since", "created in the last 30m, 24h, 7d ... or since an ISO timestamp", "AGE"),
        ListFilter("latest", "only the newest N (after the other filters)", "N"),
        ListFilter("state", "creating, available, deleting or error", "STATE"),
        ListFilter("origin", "manual, policy or safety", "ORIGIN"),
        ListFilter("kind", "volume or vm", "KIND"),
        TAG,
        PROJECT,
        REGION,
        NAME,
    ),
)

DISK_COLUMNS = (
    Column("DEVICE", "device"),
    Column("VOLUME", "volume_name"),
    Column("BOOTABLE", "bootable"),
    Column("SIZE", "size_bytes", binary_size),
    Column("LAYER", "layer"),
    Column("PARENT_LAYER", "parent_layer"),
    Column("CHECKSUM", "checksum"),
)


def add_commands(snapshots: Subcommands) -> None:
    add_list_command(snapshots, SNAPSHOTS, "list snapshots, newest first")

    create = snapshots.add_parser(
        "create",
        help="snapshot one volume, or every volume of a VM",
        description="Snapshot one volume, or every volume of a VM (plus its definition). The snapshot is "
        "`creating` until the hypervisor worker has taken it.",
    )
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--volume", metavar="ID_OR_NAME", help="a volume snapshot of this volume")
    source.add_argument("--vm", metavar="ID_OR_NAME", help="a VM snapshot of all this VM's volumes")
    create.add_argument("--project", metavar="ACCOUNT/PROJECT", help="look the name up in this project")
    create.add_argument("--name", help="default: <source>-<UTC time>")
    create.add_argument(
        "--consistency",
        choices=("application", "crash"),
        default="application",
        help="application (default: freeze the guest's file systems first) or crash",
    )
    create.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    add_output_option(create)
    create.set_defaults(handler=create_snapshot, parser=create)

    add_snapshot_command(
        snapshots, "show", "a snapshot's details: disks, consistency, sizes, restores", show_snapshot
    )
    delete_one = add_snapshot_command(
        snapshots,
        "delete",
        "delete a snapshot (its data merges away in the background)",
        delete_snapshot,
        output=False,
    )
    delete_one.add_argument(
        "--confirm", required=True, metavar="NAME", help="the snapshot's name: its data is gone for good"
    )
    hold = add_snapshot_command(
        snapshots, "hold", "pin a snapshot so that retention never deletes it", hold_snapshot
    )
    hold.add_argument("--release", action="store_true", help="unpin it instead")
    tag = add_snapshot_command(snapshots, "tag", "add and remove a snapshot's tags", tag_snapshot)
    tag.add_argument("--add", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    tag.add_argument("--remove", action="append", default=[], metavar="KEY", help="repeatable")
    diagnose = add_snapshot_command(
        snapshots,
        "diagnose",
        "what a snapshot operation is waiting for",
        diagnose_snapshot,
        output=False,
    )
    diagnose.add_argument("-o", "--output", choices=("text", "json"), default="text")
    restore = add_snapshot_command(
        snapshots, "restore", "restore to a new volume (the original is untouched)", restore_snapshot
    )
    restore.add_argument("--name", required=True, help="the new volume's name")
    restore.add_argument(
        "--disk", metavar="DISK", help="which disk of a VM snapshot: its device (vdb), volume name or id"
    )
    rollback = add_snapshot_command(
        snapshots,
        "rollback",
        "revert the volume (or the stopped VM) to the snapshot; not undoable",
        rollback_snapshot,
    )
    rollback.add_argument(
        "--confirm", required=True, metavar="NAME", help="the name of the VM or volume rolled back"
    )
    add_snapshot_command(snapshots, "retry", "queue a failed create, copy or delete again", retry_snapshot)
    copy = add_snapshot_command(
        snapshots,
        "copy",
        "copy a snapshot to another region's catalogue (charged as inter-region transfer)",
        copy_snapshot,
    )
    copy.add_argument("--source-region", required=True, metavar="REGION", help="the snapshot's region")
    copy.add_argument("--target-region", required=True, metavar="REGION", help="where the copy lands")
    copy.add_argument("--name", help="the copy's name (default: the snapshot's)")
    copy.add_argument(
        "--wait",
        action="store_true",
        help="return once the copy is available (progress on a terminal); exit 1 if it fails",
    )


def add_snapshot_command(
    parent: Subcommands, name: str, help: str, handler, *, output: bool = True
) -> argparse.ArgumentParser:
    return add_named_command(parent, name, help, handler, option="--snapshot", what="snapshot", output=output)


def snapshot_url(client: Client, args: argparse.Namespace, action: str = "") -> str:
    return resource_url(client, SNAPSHOTS, "snapshot", args.snapshot, action)


def _show_snapshot(snapshot: dict[str, Any], output: str) -> None:
    show(snapshot, output, SNAPSHOTS.columns, header=header(SNAPSHOTS))


def create_snapshot(args: argparse.Namespace) -> None:
    body = {"consistency": args.consistency, "tags": tags(args, args.tag, "--tag")}
    if args.name:
        body["name"] = args.name
    client = Client.from_environment()
    if args.vm:
        body["vm"] = resolve(client, VMS, "VM", args.vm, args.project)
    else:
        body["volume"] = resolve(client, VOLUMES, "volume", args.volume, args.project)
    _show_snapshot(client.create(SNAPSHOTS.path, body), args.output)


def _consistency_text(snapshot: dict[str, Any]) -> str:
    requested, achieved = snapshot["consistency_requested"], snapshot["consistency_achieved"]
    if not achieved:
        return f"{requested} requested (not taken yet)"
    text = achieved if achieved == requested else f"{achieved} ({requested} requested)"
    return f"{text}: {snapshot['consistency_reason']}" if snapshot["consistency_reason"] else text


def _copied(copy: dict[str, Any]) -> str:
    done, total, sent = (binary_size(copy[key]) for key in ("bytes_done", "bytes_total", "bytes_sent"))
    return f"{done} of {total}, {sent} sent between regions"


def snapshot_detail(snapshot: dict[str, Any]) -> str:
    definition = snapshot.get("vm_definition") or {}
    origin = snapshot["origin"] + (f" ({snapshot['policy_name']})" if snapshot["policy_name"] else "")
    pairs = [
        ("ID", snapshot["id"]),
        ("NAME", snapshot["name"]),
        ("PROJECT", snapshot["project"]),
        ("REGION", snapshot["region"]),
        ("KIND", snapshot["kind"]),
        ("VM", snapshot["vm_name"]),
        ("FLAVOR", definition.get("flavor")),
        ("VPC", definition.get("vpc")),
        ("STATE", snapshot["state"]),
        ("STEP", snapshot["step"]),
        ("STUCK", snapshot["stuck_reason"]),
        ("LAST_ERROR", snapshot["last_error"]),
        ("CONSISTENCY", _consistency_text(snapshot)),
        ("ORIGIN", origin),
        ("TAGS", cell(snapshot["tags"])),
        ("BILLED", binary_size(snapshot["billed_bytes"])),
        ("RECLAIMABLE", binary_size(snapshot["reclaimable_bytes"])),
        (
            "COPY_OF",
            snapshot["source_region"] and f"{snapshot['source_snapshot']} in {snapshot['source_region']}",
        ),
        ("COPIED", snapshot["source_region"] and _copied(snapshot)),
        ("CREATED", f"{timestamp(snapshot['created_at'])} by {snapshot['created_by']}"),
        ("COMPLETED", snapshot["completed_at"] and timestamp(snapshot["completed_at"])),
        ("EXPIRES", snapshot["expires_at"] and timestamp(snapshot["expires_at"])),
    ]
    parts = [fields(pairs), "", "DISKS", table(snapshot["disks"], DISK_COLUMNS)]
    if snapshot.get("restores"):
        parts += ["", "RESTORES", table(snapshot["restores"], RESTORES.columns)]
    return "\n".join(parts)


def show_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    snapshot = client.get(snapshot_url(client, args))
    if args.output == "table":
        print(snapshot_detail(snapshot))
    else:
        show(snapshot, args.output, SNAPSHOTS.columns)


def delete_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    query = urllib.parse.urlencode({"confirm": args.confirm})
    snapshot = client.delete(f"{snapshot_url(client, args)}?{query}") or {}
    print(
        f"Deleting snapshot {snapshot.get('name')} ({snapshot.get('id')}): its data merges into the "
        "snapshots and volumes that still need it, in the background"
    )


def tag_snapshot(args: argparse.Namespace) -> None:
    if not args.add and not args.remove:
        args.parser.error("give --add KEY=VALUE and/or --remove KEY")
    body = {"add": tags(args, args.add, "--add"), "remove": args.remove}
    client = Client.from_environment()
    _show_snapshot(client.create(snapshot_url(client, args, "tags"), body), args.output)


def hold_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show_snapshot(client.create(snapshot_url(client, args, "hold"), {"hold": not args.release}), args.output)


def diagnosis_text(answer: dict[str, Any]) -> str:
    """The spec's "cd compute snapshot diagnose" answer: each waiting reason as cause / check / fix."""
    if not answer["findings"] and answer["state"] not in {"creating", "deleting", "error"}:
        return f"not waiting: {answer['state']}"
    lines = [f"snapshot {answer['name']} ({answer['id']}) is {answer['state']}"]
    if answer["step"]:
        lines[0] += f": {answer['step']}"
    if answer["stuck_reason"]:
        lines.append(answer["stuck_reason"])
    if not answer["findings"]:
        lines.append("no known waiting reason: the current step is within its usual time")
    for finding in answer["findings"]:
        lines += [
            "",
            f"cause:  {finding['cause']}",
            f"check:  {finding['check']}",
            f"fix:    {finding['fix']}",
            f"detail: {finding['detail'] or '-'}",
        ]
    return "\n".join(lines)


def diagnose_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    answer = client.get(snapshot_url(client, args, "diagnose"))
    print(json.dumps(answer, indent=2) if args.output == "json" else diagnosis_text(answer))


def restore_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {"name": args.name, **({"disk": args.disk} if args.disk else {})}
    show_restore(client.create(snapshot_url(client, args, "restore"), body), args.output)


def add_vm_restore_command(vms: Subcommands) -> None:
    """`compute vm restore`: under `vm`, as the console offers it, but an operation on a VM snapshot."""
    restore = add_snapshot_command(
        vms, "restore", "restore a VM snapshot to a new VM, started when ready", restore_vm
    )
    restore.add_argument("--name", required=True, help="the new VM's name")
    restore.add_argument("--vpc", required=True)
    restore.add_argument("--flavor", help="default: the flavor the snapshot was taken on")
    restore.add_argument(
        "--yes", action="store_true", help="go on despite warnings (e.g. a flavor unlike the snapshot's)"
    )
    restore.add_argument(
        "--keep-tag",
        action="append",
        metavar="KEY",
        help="keep this tag of the source VM (repeatable). Default: all but those that would put the new "
        "VM under a snapshot policy",
    )


def restore_vm(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {"name": args.name, "vpc": args.vpc, "acknowledge_warnings": args.yes}
    if args.flavor:
        body["flavor"] = args.flavor
    if args.keep_tag is not None:
        body["keep_tags"] = args.keep_tag
    restore = client.create(snapshot_url(client, args, "restore-vm"), body)
    show_restore(restore, args.output)
    for warning in restore["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)


def rollback_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    safety = client.create(snapshot_url(client, args, "rollback"), {"confirm": args.confirm})
    _show_snapshot(safety, args.output)
    print(
        f"note: the replaced data is kept in safety snapshot {safety['name']} ({safety['id']}) until "
        f"{timestamp(safety['expires_at'])}",
        file=sys.stderr,
    )


def retry_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show_snapshot(client.create(snapshot_url(client, args, "retry"), {}), args.output)


def copy_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {"source_region": args.source_region, "target_region": args.target_region}
    if args.name:
        body["name"] = args.name
    copy = client.create(snapshot_url(client, args, "copy"), body)
    if args.wait:
        copy = _wait_for_copy(client, copy)
    _show_snapshot(copy, args.output)


def _wait_for_copy(client: Client, copy: dict[str, Any]) -> dict[str, Any]:
    """Poll until the copy has landed (or failed); a progress bar on stderr on a terminal."""
    progress = None
    try:
        while copy["state"] == "creating":
            if sys.stderr.isatty() and copy["bytes_total"]:
                progress = progress or Progress(copy["bytes_total"], "copying")
                progress.update(copy["bytes_done"])
            time.sleep(COPY_POLL_SECONDS)
            copy = client.get(f"{SNAPSHOTS.path}{copy['id']}/")
    finally:
        if progress is not None:
            progress.finish()
    if copy["state"] != "available":
        raise CLIError(
            "SnapshotCopyFailed",
            f"copy {copy['name']} ({copy['id']}) to {copy['region']} is {copy['state']}: "
            f"{copy['last_error'] or copy['step']}",
            hint=f"retry it with: clouddigit compute snapshot retry --snapshot {copy['id']}",
        )
    return copy
