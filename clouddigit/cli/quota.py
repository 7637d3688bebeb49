"""`clouddigit compute quota ...`: a project's storage quota (snapshots and custom images)."""

from __future__ import annotations

import argparse

from clouddigit.cli.client import Client
from clouddigit.cli.common import Resource, Subcommands, add_output_option, header
from clouddigit.cli.output import Column, binary_size, show

STORAGE_QUOTAS = Resource(
    path="compute/storage-quotas/",
    columns=(
        Column("PROJECT", "project"),
        Column("USED", "used_bytes", binary_size),
        Column("QUOTA", "limit_bytes", binary_size),
        Column("SNAPSHOTS", "snapshot_bytes", binary_size),
        Column("IMAGES", "image_bytes", binary_size),
        Column("TICKET", "ticket"),
    ),
    filters=(),
)


def add_commands(quotas: Subcommands) -> None:
    storage = quotas.add_parser(
        "storage",
        help="a project's storage quota (snapshots and images): usage, or raise it with a ticket",
        description="How much of its storage quota a project uses (snapshots' billed bytes plus custom "
        "images' stored bytes). With --limit-gib and --ticket, set the quota first (needs the rights to "
        "raise snapshot and image limits, e.g. account.admin).",
    )
    storage.add_argument("--project", required=True, metavar="ACCOUNT/PROJECT")
    storage.add_argument("--limit-gib", type=int, metavar="N", help="the new quota in GiB")
    storage.add_argument("--ticket", help="the support ticket's reference (required with --limit-gib)")
    add_output_option(storage)
    storage.set_defaults(handler=storage_quota, parser=storage)


def storage_quota(args: argparse.Namespace) -> None:
    """The project's storage use against its quota; with --limit-gib (and a ticket), raise it first."""
    client = Client.from_environment()
    if args.limit_gib is None:
        usage = client.get(f"{STORAGE_QUOTAS.path}usage/", {"project": args.project})
    elif not args.ticket:
        args.parser.error("--limit-gib needs --ticket: quotas are raised for a support ticket")
    else:
        body = {"project": args.project, "limit_gib": args.limit_gib, "ticket": args.ticket}
        usage = client.create(STORAGE_QUOTAS.path, body)
    show(usage, args.output, STORAGE_QUOTAS.columns, header=header(STORAGE_QUOTAS))
