"""What every command group uses: its sub-parsers' building blocks, the generic `list` command, and
naming an object by its id or its name.

Handlers take the parsed arguments. Usage mistakes go to `args.parser.error` (exit 2); everything else
that goes wrong is a CLIError (exit 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import TypeAlias

from clouddigit.cli.client import Client, CLIError
from clouddigit.cli.output import FORMATS, Column, show

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


@dataclass(frozen=True)
class ListFilter:
    """`--<name> VALUE` on the command line becomes `?<name>=VALUE` on the API list."""

    name: str
    help: str
    metavar: str = "VALUE"
    choices: tuple[str, ...] | None = None
    # A flag: `--<name>` alone becomes `?<name>=true`.
    flag: bool = False


@dataclass(frozen=True)
class Resource:
    """What the CLI lists: the API path, the table columns and the list filters."""

    path: str
    columns: tuple[Column, ...]
    filters: tuple[ListFilter, ...]


PROJECT = ListFilter("project", "account/project (or a project id)", "ACCOUNT/PROJECT")
REGION = ListFilter("region", "region slug, e.g. bd-dha-1", "REGION")
STATE = ListFilter("state", "state, e.g. running", "STATE")
TAG = ListFilter("tag", "carries this tag", "KEY=VALUE")
NAME = ListFilter("name", "name contains", "TEXT")


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
        option = f"--{list_filter.name.replace('_', '-')}"  # argparse keeps the name as its dest
        if list_filter.flag:
            parser.add_argument(option, action="store_const", const="true", help=list_filter.help)
        else:
            parser.add_argument(
                option,
                help=list_filter.help,
                metavar=list_filter.metavar,
                choices=list_filter.choices,
            )
    add_output_option(parser)
    parser.set_defaults(handler=list_resource, resource=resource)


def add_where_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project",
        metavar="ACCOUNT/PROJECT",
        default=os.environ.get("CLOUDDIGIT_PROJECT"),
        help="default: $CLOUDDIGIT_PROJECT, else your only project",
    )
    parser.add_argument(
        "--region",
        default=os.environ.get("CLOUDDIGIT_REGION"),
        help="default: $CLOUDDIGIT_REGION, else the console's first region (bd-dha-1)",
    )


def add_operation_command(
    parent: Subcommands, name: str, help: str, handler, *, what: str, listed: str, output: bool = True
) -> None:
    """A command acting on one long operation (a restore, a drill), named by its id: their names are the
    names of what they make, which need not be unique."""
    parser = parent.add_parser(name, help=help, description=help)
    parser.add_argument("id", metavar=f"{what.upper()}_ID", help=f"the {what}'s id (see `{listed}`)")
    if output:
        add_output_option(parser)
    parser.set_defaults(handler=handler, parser=parser)


def add_named_command(
    parent: Subcommands, name: str, help: str, handler, *, option: str, what: str, output: bool = True
) -> argparse.ArgumentParser:
    """A command acting on one snapshot or volume, named by `option` (`--snapshot ID`, as the spec
    writes its commands): its id, or its name when unique."""
    parser = parent.add_parser(name, help=help, description=help)
    parser.add_argument(
        option, required=True, metavar=what.upper(), help=f"the {what}'s id (or its name, when unique)"
    )
    if output:
        add_output_option(parser)
    parser.set_defaults(handler=handler, parser=parser)
    return parser


def resource_url(client: Client, resource: Resource, what: str, reference: str, action: str = "") -> str:
    """The API path of one item of `resource` (named by id or unique name), or of one of its actions."""
    return f"{resource.path}{resolve(client, resource, what, reference)}/" + (f"{action}/" if action else "")


def header(resource: Resource) -> bool:
    """Tables have a header line only on a terminal, so that piped output is data lines only (as `gh`
    does): the spec counts snapshots per VM with `... snapshot list --policy P --since 24h | awk
    '{print $3}' | sort | uniq -c`, where a header would count as a VM named "VM"."""
    return sys.stdout.isatty()


def list_resource(args: argparse.Namespace) -> None:
    resource: Resource = args.resource
    params = {f.name: getattr(args, f.name) for f in resource.filters if getattr(args, f.name) is not None}
    items = Client.from_environment().list_all(resource.path, params)
    show(items, args.output, resource.columns, header=header(resource))


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def resolve(client: Client, resource: Resource, what: str, value: str, project: str | None = None) -> str:
    """An id as it is; a name looked up among what the caller may see (the API's `name` filter matches
    parts of names, so only exact matches count)."""
    if is_uuid(value):
        return value
    params = {"name": value, **({"project": project} if project else {})}
    matches = [item for item in client.list_all(resource.path, params) if item["name"] == value]
    if len(matches) == 1:
        return str(matches[0]["id"])
    if not matches:
        raise CLIError("NotFound", f"no {what} named {value!r} that you can see")
    where = ", ".join(f"{item['id']} in {item['project']}" for item in matches)
    raise CLIError("Ambiguous", f"{len(matches)} {what}s are named {value!r} ({where}): give the id")


def operation_path(args: argparse.Namespace, resource: Resource, action: str = "") -> str:
    """The API path of the restore or drill named by its id (its name need not be unique)."""
    if not is_uuid(args.id):
        args.parser.error(f"{args.id!r} is not an id: copy it from the list")
    return f"{resource.path}{args.id}/" + (f"{action}/" if action else "")


def tags(args: argparse.Namespace, pairs: list[str], option: str) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            args.parser.error(f"{option} takes KEY=VALUE, not {pair!r}")
        tags[key.strip()] = value.strip()
    return tags


def where(client: Client, args: argparse.Namespace) -> dict[str, str]:
    """The project (given, else the only one you can see) and region (given, else the console's default)."""
    project = args.project
    if not project:
        visible = [item["path"] for item in client.list_all("projects/", {})]
        if len(visible) != 1:
            raise CLIError(
                "MissingProject",
                "Name the project with --project ACCOUNT/PROJECT or set CLOUDDIGIT_PROJECT"
                + (f"; you can see {', '.join(visible)}." if visible else "; you can see no project yet."),
            )
        project = visible[0]
    return {"project": project, **({"region": args.region} if args.region else {})}


WAIT_POLL_SECONDS = 1.0


def add_wait_option(parser: argparse.ArgumentParser, done: str) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help=f"return once the hypervisor worker has {done} (or failed), not as soon as it is queued",
    )


def settled(client: Client, resource: Resource, row: dict, busy: tuple[str, ...]) -> dict:
    """`row` polled until its state leaves `busy`; an operation that failed (its row says why in
    `last_error`) is an error."""
    while row["state"] in busy:
        time.sleep(WAIT_POLL_SECONDS)
        row = client.get(f"{resource.path}{row['id']}/")
    if row.get("last_error"):
        raise CLIError("OperationFailed", f"{row['name']} is {row['state']}: {row['last_error']}")
    return row
