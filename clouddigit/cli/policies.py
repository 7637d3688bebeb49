"""`clouddigit compute snapshot policy ...`: snapshot policies (schedules and retention) as YAML: apply,
export, simulate, delete; and their restore drills (`... policy drill ...`)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from pathlib import Path

from clouddigit.cli.client import Client, CLIError
from clouddigit.cli.common import (
    NAME,
    PROJECT,
    ListFilter,
    Resource,
    Subcommands,
    add_list_command,
    add_operation_command,
    add_output_option,
    header,
    operation_path,
)
from clouddigit.cli.output import EMPTY, Column, show, timestamp

POLICIES = Resource(
    path="compute/snapshot-policies/",
    columns=(
        Column("ID", "id"),
        Column("NAME", "name"),
        Column("PROJECT", "project"),
        Column("SCHEDULE", "schedule"),
        Column("RETENTION", "retention"),
        Column("VM_TAGS", "scope", pick=lambda policy: (policy.get("scope") or {}).get("vm_tags")),
        Column("APPLIED_BY", "applied_by"),
        Column("UPDATED", "updated_at", timestamp),
    ),
    filters=(PROJECT, NAME),
)

DRILLS = Resource(
    path="compute/restore-drills/",
    columns=(
        Column("ID", "id"),
        Column("VM", "vm_name"),
        Column("SNAPSHOT", "snapshot_name"),
        Column("POLICY", "policy"),
        Column("STATE", "state"),
        Column("SECONDS", "seconds", lambda value: EMPTY if value is None else f"{value:.1f}"),
        Column("STARTED", "started_at", timestamp),
        Column("ERROR", "error"),
    ),
    filters=(
        PROJECT,
        ListFilter("policy", "drills of the snapshot policy with this name", "POLICY"),
        ListFilter("state", "running, passed or failed", "STATE"),
    ),
)

SIMULATED = (
    Column("VM", "vm"),
    Column("SLOT", "slot"),
    Column("CLASS", "class"),
    Column("OUTCOME", "outcome"),
    Column("KEPT", "kept"),
)


def add_commands(policies: Subcommands) -> None:
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
    apply.set_defaults(handler=apply_policy, parser=apply)

    export = policies.add_parser(
        "export",
        help="print a policy's canonical YAML",
        description="Print a policy's canonical YAML: what `apply -f` accepts back.",
    )
    export.add_argument("name", metavar="NAME")
    export.add_argument(
        "--project", metavar="ACCOUNT/PROJECT", help="needed when several projects have a policy of that name"
    )
    export.set_defaults(handler=export_policy, parser=export)

    delete = policies.add_parser(
        "delete",
        help="delete a snapshot policy",
        description="Delete a policy, saying what becomes of its snapshots: keep them (as manual snapshots), "
        "retain (keep applying its retention, take no new ones) or delete them.",
    )
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--project", metavar="ACCOUNT/PROJECT")
    delete.add_argument("--snapshots", required=True, choices=["keep", "retain", "delete"])
    delete.add_argument(
        "--confirm", default="", metavar="NAME", help="the policy's name, to delete its snapshots with it"
    )
    delete.set_defaults(handler=delete_policy, parser=delete)

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
    simulate.set_defaults(handler=simulate_policy, parser=simulate)


def add_drill_commands(drills: Subcommands) -> None:
    add_list_command(drills, DRILLS, "list restore drills, newest first, with why a failed one failed")
    for name, help, handler in (
        (
            "retry",
            "run a failed or interrupted drill again (a failed one from a fresh restore)",
            retry_drill,
        ),
        ("delete", "delete a failed drill from the history", delete_drill),
    ):
        add_operation_command(
            drills,
            name,
            help,
            handler,
            what="drill",
            listed="clouddigit compute snapshot policy drill list",
            output=name == "retry",
        )


def _read_policy(name: str) -> str:
    """The YAML in file `name` (`-`: stdin), exactly as written: the server's errors name its lines."""
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except OSError as error:
        raise CLIError("CannotRead", f"{name}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise CLIError("CannotRead", f"{name} is not UTF-8 text") from None


def apply_policy(args: argparse.Namespace) -> None:
    body = {"project": args.project, "yaml": _read_policy(args.file)}
    policy = Client.from_environment().create(f"{POLICIES.path}apply/", body)
    show(policy, args.output, POLICIES.columns, header=header(POLICIES))


def _policy_id(client: Client, name: str, project: str | None) -> str:
    params = {"name": name, **({"project": project} if project else {})}
    matches = [item for item in client.list_all(POLICIES.path, params) if item["name"] == name]
    if len(matches) == 1:
        return str(matches[0]["id"])
    where = f" in {project}" if project else ""
    if not matches:
        raise CLIError("NotFound", f"no snapshot policy named {name!r}{where} that you can see")
    projects = ", ".join(item["project"] for item in matches)
    raise CLIError(
        "Ambiguous", f"{len(matches)} projects have a policy named {name!r} ({projects}): give --project"
    )


def export_policy(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    policy_id = _policy_id(client, args.name, args.project)
    sys.stdout.write(client.get_text(f"{POLICIES.path}{policy_id}/export/", accept="text/yaml"))


def simulate_policy(args: argparse.Namespace) -> None:
    body = {"project": args.project, "yaml": _read_policy(args.file), "days": args.days}
    if args.start:
        body["start"] = args.start
    outcome = Client.from_environment().create(f"{POLICIES.path}simulate/", body)
    if args.output == "json":
        print(json.dumps(outcome, indent=2))
        return
    show(outcome["created"], "table", SIMULATED, header=header(POLICIES))
    print(
        f"existing snapshots: {len(outcome['existing_kept'])} kept, "
        f"{len(outcome['existing_deleted'])} deleted ({outcome['freed_bytes']} billed bytes freed)",
        file=sys.stderr,
    )
    for region in sorted({copy["region"] for copy in outcome.get("copies", [])}):
        made = [copy for copy in outcome["copies"] if copy["region"] == region]
        kept = sum(1 for copy in made if copy["kept"])
        print(f"copies to {region}: {len(made)} made, {kept} kept at the end", file=sys.stderr)


def delete_policy(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    policy_id = _policy_id(client, args.name, args.project)
    query = urllib.parse.urlencode({"snapshots": args.snapshots, "confirm": args.confirm})
    client.delete(f"{POLICIES.path}{policy_id}/?{query}")
    print(f"Deleted snapshot policy {args.name} ({args.snapshots} its snapshots)")


def retry_drill(args: argparse.Namespace) -> None:
    path = operation_path(args, DRILLS, "retry")
    drill = Client.from_environment().create(path, {})
    show(drill, args.output, DRILLS.columns, header=header(DRILLS))


def delete_drill(args: argparse.Namespace) -> None:
    path = operation_path(args, DRILLS)
    Client.from_environment().delete(path)
    print(f"Deleted failed drill {args.id}")
