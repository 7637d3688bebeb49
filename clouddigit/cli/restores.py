"""`clouddigit compute restore ...`: restores from snapshots (started by `snapshot restore` and
`vm restore`), with why a failed one failed; retry or delete a failed one."""

from __future__ import annotations

import argparse

from clouddigit.cli.client import Client
from clouddigit.cli.common import (
    ListFilter,
    Resource,
    Subcommands,
    add_list_command,
    add_operation_command,
    header,
    operation_path,
)
from clouddigit.cli.output import EMPTY, Column, cell, show, timestamp

RESTORES = Resource(
    path="compute/restores/",
    columns=(
        Column("ID", "id"),
        Column("NAME", "name"),
        Column("KIND", "kind"),
        Column("STATE", "state"),
        Column("SECONDS", "seconds", lambda value: EMPTY if value is None else f"{value:.1f}"),
        Column("SNAPSHOT", "snapshot_name"),
        Column("STARTED", "started_at", timestamp),
        Column("WARNINGS", "warnings", lambda value: cell(len(value or []))),
        Column("ERROR", "last_error"),
    ),
    filters=(
        ListFilter("snapshot", "restores of this snapshot (id)", "SNAPSHOT_ID"),
        ListFilter("state", "restoring, done or failed", "STATE"),
        ListFilter("kind", "volume or vm", "KIND"),
    ),
)


def add_commands(restores: Subcommands) -> None:
    add_list_command(restores, RESTORES, "list restores, newest first, with why a failed one failed")
    for name, help, handler in (
        (
            "retry",
            "go on with a failed or interrupted restore, reusing the files it made",
            retry_restore,
        ),
        ("delete", "delete a failed restore with the volume or VM it began to make", delete_restore),
    ):
        add_operation_command(
            restores,
            name,
            help,
            handler,
            what="restore",
            listed="clouddigit compute restore list",
            output=name == "retry",
        )


def show_restore(restore: dict, output: str) -> None:
    show(restore, output, RESTORES.columns, header=header(RESTORES))


def retry_restore(args: argparse.Namespace) -> None:
    path = operation_path(args, RESTORES, "retry")
    show_restore(Client.from_environment().create(path, {}), args.output)


def delete_restore(args: argparse.Namespace) -> None:
    path = operation_path(args, RESTORES)
    Client.from_environment().delete(path)
    print(f"Deleted failed restore {args.id} and the volume or VM it had begun to make")
