"""What each command does, given its parsed arguments. Usage mistakes go to `args.parser.error` (exit 2);
everything else that goes wrong is a CLIError (exit 1)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from clouddigit.cli.client import Client, CLIError, configured_url, write_config
from clouddigit.cli.output import show
from clouddigit.cli.resources import ROLE_BINDINGS, Resource


def login(args: argparse.Namespace) -> None:
    if args.password_stdin and not args.username:
        args.parser.error("--password-stdin needs --username")
    url = (args.url or configured_url()).rstrip("/")
    username = args.username or input("Username: ")
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else getpass.getpass("Password: ")
    token = Client(url).obtain_token(username=username, password=password)
    path = write_config(url=url, token=token)
    print(f"Logged in to {url} as {username}; wrote {path}")
    if os.environ.get("CLOUDDIGIT_TOKEN"):
        print(f"note: CLOUDDIGIT_TOKEN is set and wins over {path}", file=sys.stderr)


def list_resource(args: argparse.Namespace) -> None:
    resource: Resource = args.resource
    params = {f.name: getattr(args, f.name) for f in resource.filters if getattr(args, f.name) is not None}
    items = Client.from_environment().list_all(resource.path, params)
    show(items, args.output, resource.columns)


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
