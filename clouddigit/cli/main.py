"""`clouddigit`: the command tree and the dispatch. Commands mirror the console: `clouddigit compute vm
list`. Each group's sub-commands, handlers and table columns are in the module named here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clouddigit.cli import (
    attestation,
    iam,
    images,
    policies,
    quota,
    restores,
    session,
    snapshots,
    vms,
    volumes,
)
from clouddigit.cli.client import CLIError
from clouddigit.cli.common import add_group

ENVIRONMENT_HELP = """\
The console's address and your token come from CLOUDDIGIT_URL and CLOUDDIGIT_TOKEN, else from the file
`clouddigit login` writes ($XDG_CONFIG_HOME/clouddigit/config.json, default ~/.config/clouddigit/).
Errors print `ERROR: <code>: <message>` on stderr and exit 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clouddigit",
        description="Cloud Digit console from the command line (REST API client).",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    session.add_commands(top)

    compute = add_group(top, "compute", "VMs, volumes, snapshots and images")
    vm = add_group(compute, "vm", "virtual machines")
    vms.add_commands(vm)
    snapshots.add_vm_restore_command(vm)
    volumes.add_commands(add_group(compute, "volume", "volumes"))
    snapshot = add_group(compute, "snapshot", "snapshots of volumes and VMs")
    snapshots.add_commands(snapshot)
    policy = add_group(snapshot, "policy", "snapshot policies: schedules and retention")
    policies.add_commands(policy)
    policies.add_drill_commands(
        add_group(policy, "drill", "restore drills: a VM's latest snapshot restored and checked")
    )
    restores.add_commands(add_group(compute, "restore", "restores from snapshots"))
    image = add_group(compute, "image", "images: the catalogue, imports, sharing, deprecation")
    images.add_commands(image)
    attestation.add_image_commands(image)
    quota.add_commands(add_group(compute, "quota", "project quotas"))

    access = add_group(top, "iam", "who may do what")
    iam.add_commands(add_group(access, "role", "role bindings"))
    attestation.add_signing_key_commands(add_group(access, "signing-key", "CIS attestors' signing keys"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except CLIError as error:
        print(f"ERROR: {error.code}: {error.message}", file=sys.stderr)
        if error.hint:
            print(f"hint: {error.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
