"""`clouddigit iam role ...`: who may do what, as role bindings of a user or group on a project or account."""

from __future__ import annotations

import argparse

from clouddigit.cli.client import Client, CLIError
from clouddigit.cli.common import (
    PROJECT,
    ListFilter,
    Resource,
    Subcommands,
    add_list_command,
    add_output_option,
)
from clouddigit.cli.output import Column, show

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


def add_commands(roles: Subcommands) -> None:
    add_list_command(roles, ROLE_BINDINGS, "list role bindings")

    grant = roles.add_parser("grant", help="grant a role to a user or group on a project or account")
    grant.add_argument("--role", required=True, help="e.g. image.publisher")
    add_binding_options(grant, required=True)
    add_output_option(grant)
    grant.set_defaults(handler=grant_role)

    revoke = roles.add_parser(
        "revoke",
        help="revoke a role binding",
        description="Revoke one role binding: by --id, or by --role, --user/--group and --project/--account.",
    )
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", help="the binding's id (see `clouddigit iam role list`)")
    which.add_argument("--role", help="e.g. image.publisher")
    add_binding_options(revoke, required=False)
    revoke.set_defaults(handler=revoke_role, parser=revoke)


def add_binding_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    principal = parser.add_mutually_exclusive_group(required=required)
    principal.add_argument("--user", metavar="USERNAME")
    principal.add_argument("--group", metavar="GROUP")
    scope = parser.add_mutually_exclusive_group(required=required)
    scope.add_argument("--project", metavar="ACCOUNT/PROJECT", help="a project")
    scope.add_argument("--account", metavar="ACCOUNT", help="a whole account")


def _principal(args: argparse.Namespace) -> dict[str, str]:
    return {"user": args.user} if args.user else {"group": args.group}


def _scope(args: argparse.Namespace) -> dict[str, str]:
    return {"project": args.project} if args.project else {"account": args.account}


def grant_role(args: argparse.Namespace) -> None:
    body = {"role": args.role, **_principal(args), **_scope(args)}
    binding = Client.from_environment().create(ROLE_BINDINGS.path, body)
    show(binding, args.output, ROLE_BINDINGS.columns)


def _matching_binding_id(client: Client, args: argparse.Namespace) -> str:
    found = client.list_all(ROLE_BINDINGS.path, {"role": args.role, **_principal(args), **_scope(args)})
    # `?account=` also lists the account's project bindings; `--account` means the account-wide one.
    matches = [binding for binding in found if args.project or binding["project"] is None]
    if len(matches) == 1:
        return str(matches[0]["id"])
    if not matches:
        who = f"user {args.user}" if args.user else f"group {args.group}"
        where = f"project {args.project}" if args.project else f"account {args.account}"
        raise CLIError("NotFound", f"no binding of {args.role} to {who} on {where} that you can see")
    ids = ", ".join(str(binding["id"]) for binding in matches)
    raise CLIError("Ambiguous", f"{len(matches)} bindings match ({ids}); revoke one with --id")


def revoke_role(args: argparse.Namespace) -> None:
    named = args.user or args.group or args.project or args.account
    if args.id and named:
        args.parser.error("--id names the binding by itself: drop --user/--group/--project/--account")
    if not args.id and not ((args.user or args.group) and (args.project or args.account)):
        args.parser.error("--role needs --user or --group, and --project or --account")
    client = Client.from_environment()
    binding_id = args.id or _matching_binding_id(client, args)
    client.delete(f"{ROLE_BINDINGS.path}{binding_id}/")
    print(f"Revoked role binding {binding_id}")
