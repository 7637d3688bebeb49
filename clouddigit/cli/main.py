"""`clouddigit`: the parser and the dispatch. Commands mirror the console: `clouddigit compute vm list`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TypeAlias

from clouddigit.cli import commands
from clouddigit.cli.client import CLIError
from clouddigit.cli.output import FORMATS
from clouddigit.cli.resources import POLICIES, RESTORES, ROLE_BINDINGS, SNAPSHOTS, VMS, VOLUMES, Resource

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

ENVIRONMENT_HELP = """\
The console's address and your token come from CLOUDDIGIT_URL and CLOUDDIGIT_TOKEN, else from the file
`clouddigit login` writes ($XDG_CONFIG_HOME/clouddigit/config.json, default ~/.config/clouddigit/).
Errors print `ERROR: <code>: <message>` on stderr and exit 1."""


def add_group(parent: Subcommands, name: str, help: str) -> Subcommands:
    parser = parent.add_parser(name, help=help, description=help)
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=FORMATS, default="table", help="table (default), json, or bare ids"
    )


def add_list_command(parent: Subcommands, resource: Resource, help: str) -> None:
    parser = parent.add_parser("list", help=help, description=f"{help} (every page)")
    for list_filter in resource.filters:
        parser.add_argument(f"--{list_filter.name}", help=list_filter.help, metavar=list_filter.metavar)
    add_output_option(parser)
    parser.set_defaults(handler=commands.list_resource, resource=resource)


def add_binding_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    principal = parser.add_mutually_exclusive_group(required=required)
    principal.add_argument("--user", metavar="USERNAME")
    principal.add_argument("--group", metavar="GROUP")
    scope = parser.add_mutually_exclusive_group(required=required)
    scope.add_argument("--project", metavar="ACCOUNT/PROJECT", help="a project")
    scope.add_argument("--account", metavar="ACCOUNT", help="a whole account")


def add_role_commands(roles: Subcommands) -> None:
    add_list_command(roles, ROLE_BINDINGS, "list role bindings")

    grant = roles.add_parser("grant", help="grant a role to a user or group on a project or account")
    grant.add_argument("--role", required=True, help="e.g. image.publisher")
    add_binding_options(grant, required=True)
    add_output_option(grant)
    grant.set_defaults(handler=commands.grant_role)

    revoke = roles.add_parser(
        "revoke",
        help="revoke a role binding",
        description="Revoke one role binding: by --id, or by --role, --user/--group and --project/--account.",
    )
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", help="the binding's id (see `clouddigit iam role list`)")
    which.add_argument("--role", help="e.g. image.publisher")
    add_binding_options(revoke, required=False)
    revoke.set_defaults(handler=commands.revoke_role, parser=revoke)


def add_snapshot_command(
    parent: Subcommands, name: str, help: str, handler, *, output: bool = True
) -> argparse.ArgumentParser:
    """A command acting on one snapshot, named by `--snapshot`."""
    parser = parent.add_parser(name, help=help, description=help)
    parser.add_argument(
        "--snapshot", required=True, metavar="ID", help="the snapshot's id (or its name, when unique)"
    )
    if output:
        add_output_option(parser)
    parser.set_defaults(handler=handler, parser=parser)
    return parser


def add_snapshot_commands(snapshots: Subcommands) -> None:
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
    create.set_defaults(handler=commands.create_snapshot, parser=create)

    add_snapshot_command(
        snapshots, "show", "a snapshot's details: disks, consistency, sizes, restores", commands.show_snapshot
    )
    add_snapshot_command(
        snapshots,
        "delete",
        "delete a snapshot (its data merges away in the background)",
        commands.delete_snapshot,
        output=False,
    )
    hold = add_snapshot_command(
        snapshots, "hold", "pin a snapshot so that retention never deletes it", commands.hold_snapshot
    )
    hold.add_argument("--release", action="store_true", help="unpin it instead")
    tag = add_snapshot_command(snapshots, "tag", "add and remove a snapshot's tags", commands.tag_snapshot)
    tag.add_argument("--add", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    tag.add_argument("--remove", action="append", default=[], metavar="KEY", help="repeatable")
    diagnose = add_snapshot_command(
        snapshots,
        "diagnose",
        "what a snapshot operation is waiting for",
        commands.diagnose_snapshot,
        output=False,
    )
    diagnose.add_argument("-o", "--output", choices=("text", "json"), default="text")
    restore = add_snapshot_command(
        snapshots, "restore", "restore to a new volume (the original is untouched)", commands.restore_snapshot
    )
    restore.add_argument("--name", required=True, help="the new volume's name")
    restore.add_argument("--disk", metavar="DISK_ID", help="which disk of a VM snapshot (see show)")
    rollback = add_snapshot_command(
        snapshots,
        "rollback",
        "revert the volume (or the stopped VM) to the snapshot; not undoable",
        commands.rollback_snapshot,
    )
    rollback.add_argument(
        "--confirm", required=True, metavar="NAME", help="the name of the VM or volume rolled back"
    )
    add_snapshot_command(snapshots, "retry", "queue a failed create or delete again", commands.retry_snapshot)
    add_policy_commands(add_group(snapshots, "policy", "snapshot policies: schedules and retention"))


def add_policy_commands(policies: Subcommands) -> None:
    add_list_command(policies, POLICIES, "list snapshot policies")

    apply = policies.add_parser(
        "apply",
        help="create or replace a snapshot policy from its YAML",
        description="Create the policy named in the YAML, or replace the project's policy of that name. "
        "Nothing is saved unless all of it is valid; an error names the line and field.",
    )
    apply.add_argument("-f", "--file", required=True, metavar="FILE", help="the policy's YAML (-: stdin)")
    apply.add_argument("--project", required=True, metavar="ACCOUNT/PROJECT")
    add_output_option(apply)
    apply.set_defaults(handler=commands.apply_policy, parser=apply)

    export = policies.add_parser(
        "export",
        help="print a policy's canonical YAML",
        description="Print a policy's canonical YAML: what `apply -f` accepts back.",
    )
    export.add_argument("name", metavar="NAME")
    export.add_argument(
        "--project", metavar="ACCOUNT/PROJECT", help="needed when several projects have a policy of that name"
    )
    export.set_defaults(handler=commands.export_policy, parser=export)

    delete = policies.add_parser(
        "delete",
        help="delete a snapshot policy",
        description="Delete a policy, saying what becomes of its snapshots: keep them (as manual snapshots), "
        "retain (keep applying its retention, take no new ones) or delete them.",
    )
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--project", metavar="ACCOUNT/PROJECT")
    delete.add_argument("--snapshots", required=True, choices=["keep", "retain", "delete"])
    delete.set_defaults(handler=commands.delete_policy, parser=delete)

    simulate = policies.add_parser(
        "simulate",
        help="what a policy would create, keep and delete, without saving anything",
        description="The prune simulator: which existing snapshots the policy would keep and delete, and "
        "every snapshot it would create over --days from --start (and whether it is kept at the end).",
    )
    simulate.add_argument("-f", "--file", required=True, metavar="FILE", help="the policy's YAML (-: stdin)")
    simulate.add_argument("--project", required=True, metavar="ACCOUNT/PROJECT")
    simulate.add_argument("--start", metavar="ISO_TIME", help="e.g. 2026-01-01T00:00 (UTC); default: now")
    simulate.add_argument("--days", type=int, default=0, help="how many days to simulate (default 0)")
    simulate.add_argument("-o", "--output", choices=["table", "json"], default="table")
    simulate.set_defaults(handler=commands.simulate_policy, parser=simulate)


def add_vm_commands(vms: Subcommands) -> None:
    add_list_command(vms, VMS, "list VMs")
    restore = add_snapshot_command(
        vms, "restore", "restore a VM snapshot to a new VM, started when ready", commands.restore_vm
    )
    restore.add_argument("--name", required=True, help="the new VM's name")
    restore.add_argument("--vpc", required=True)
    restore.add_argument("--flavor", help="default: the flavor the snapshot was taken on")
    restore.add_argument(
        "--yes", action="store_true", help="go on despite warnings (e.g. a flavor unlike the snapshot's)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clouddigit",
        description="Cloud Digit console from the command line (REST API client).",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = top.add_parser("login", help="get an API token and save it with the console's URL")
    login.add_argument("--url", help="console address (default: CLOUDDIGIT_URL, the config file, or local)")
    login.add_argument("--username")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.set_defaults(handler=commands.login, parser=login)

    compute = add_group(top, "compute", "VMs, volumes and snapshots")
    add_vm_commands(add_group(compute, "vm", "virtual machines"))
    add_list_command(add_group(compute, "volume", "volumes"), VOLUMES, "list volumes")
    add_snapshot_commands(add_group(compute, "snapshot", "snapshots of volumes and VMs"))
    add_list_command(add_group(compute, "restore", "restores from snapshots"), RESTORES, "list restores")

    iam = add_group(top, "iam", "who may do what")
    add_role_commands(add_group(iam, "role", "role bindings"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except CLIError as error:
        print(f"ERROR: {error.code}: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
