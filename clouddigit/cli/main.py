"""`clouddigit`: the parser and the dispatch. Commands mirror the console: `clouddigit compute vm list`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TypeAlias

from clouddigit.cli import commands
from clouddigit.cli.client import CLIError
from clouddigit.cli.output import FORMATS
from clouddigit.cli.resources import (
    DRILLS,
    IMAGES,
    POLICIES,
    RESTORES,
    ROLE_BINDINGS,
    SIGNING_KEYS,
    SNAPSHOTS,
    VMS,
    VOLUMES,
    Resource,
)

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
        if list_filter.flag:
            parser.add_argument(
                f"--{list_filter.name}", action="store_const", const="true", help=list_filter.help
            )
        else:
            parser.add_argument(
                f"--{list_filter.name}",
                help=list_filter.help,
                metavar=list_filter.metavar,
                choices=list_filter.choices,
            )
    add_output_option(parser)
    parser.set_defaults(handler=commands.list_resource, resource=resource)


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
    delete_one = add_snapshot_command(
        snapshots,
        "delete",
        "delete a snapshot (its data merges away in the background)",
        commands.delete_snapshot,
        output=False,
    )
    delete_one.add_argument(
        "--confirm", required=True, metavar="NAME", help="the snapshot's name: its data is gone for good"
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
    delete.add_argument(
        "--confirm", default="", metavar="NAME", help="the policy's name, to delete its snapshots with it"
    )
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
    add_drill_commands(
        add_group(policies, "drill", "restore drills: a VM's latest snapshot restored and checked")
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


def add_restore_commands(restores: Subcommands) -> None:
    add_list_command(restores, RESTORES, "list restores, newest first, with why a failed one failed")
    for name, help, handler in (
        (
            "retry",
            "go on with a failed or interrupted restore, reusing the files it made",
            commands.retry_restore,
        ),
        ("delete", "delete a failed restore with the volume or VM it began to make", commands.delete_restore),
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


def add_drill_commands(drills: Subcommands) -> None:
    add_list_command(drills, DRILLS, "list restore drills, newest first, with why a failed one failed")
    for name, help, handler in (
        (
            "retry",
            "run a failed or interrupted drill again (a failed one from a fresh restore)",
            commands.retry_drill,
        ),
        ("delete", "delete a failed drill from the history", commands.delete_drill),
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


def add_vm_commands(vms: Subcommands) -> None:
    add_list_command(vms, VMS, "list VMs")
    create = vms.add_parser(
        "create",
        help="create a VM from an image",
        description="Create a VM whose boot volume is a copy of an image (see `clouddigit compute image "
        "picker`), started once it is defined unless --no-start.",
    )
    create.add_argument("--name", required=True)
    create.add_argument("--image", required=True, metavar="IMAGE", help="the image's name or id")
    create.add_argument("--flavor", required=True, help="e.g. std-2x4")
    create.add_argument("--vpc", required=True)
    add_where_options(create)
    create.add_argument(
        "--boot-size-gib", type=int, metavar="GIB", help="boot volume size (default: the image's size)"
    )
    create.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    create.add_argument("--no-start", action="store_true", help="define the VM but leave it stopped")
    add_output_option(create)
    create.set_defaults(handler=commands.create_vm, parser=create)
    restore = add_snapshot_command(
        vms, "restore", "restore a VM snapshot to a new VM, started when ready", commands.restore_vm
    )
    restore.add_argument("--name", required=True, help="the new VM's name")
    restore.add_argument("--vpc", required=True)
    restore.add_argument("--flavor", help="default: the flavor the snapshot was taken on")
    restore.add_argument(
        "--yes", action="store_true", help="go on despite warnings (e.g. a flavor unlike the snapshot's)"
    )


def add_image_command(
    parent: Subcommands,
    name: str,
    help: str,
    handler,
    *,
    output: bool = True,
    project_option: bool = True,
    region_option: str = "--region",
) -> argparse.ArgumentParser:
    """A command acting on one image, named by IMAGE: its id, or a name that `--project` and `--region`
    narrow to one image. `share` names another project with --project, so it has no such option; `copy`
    calls its option --source-region, beside --target-region."""
    parser = parent.add_parser(name, help=help, description=help)
    parser.add_argument("image", metavar="IMAGE", help="the image's id, or its name when unique")
    if project_option:
        parser.add_argument(
            "--project",
            dest="image_project",
            metavar="ACCOUNT/PROJECT",
            help="look the name up in this project",
        )
    parser.add_argument(
        region_option, dest="image_region", metavar="REGION", help="look the name up in this region"
    )
    if output:
        add_output_option(parser)
    parser.set_defaults(handler=handler, parser=parser)
    return parser


def add_image_commands(images: Subcommands) -> None:
    """`clouddigit compute image ...`; signing and the image policy add their commands here too."""
    add_list_command(images, IMAGES, "list the image catalogue: stock, hardened and custom images")
    add_image_command(
        images, "show", "an image's details: checksums, checklist, deprecation, shares", commands.show_image
    )

    upload = images.add_parser(
        "import",
        help="upload an image file (qcow2, raw, vmdk, vhd, vhdx or iso)",
        description="Upload an image file into a project's custom images: the file is streamed from disk "
        "(progress on a terminal), its headers are checked against --format, then the console converts "
        "and stores it. Waits until the image is available (or failed) unless --no-wait.",
    )
    upload.add_argument("--file", required=True, metavar="FILE", help="the image file")
    upload.add_argument(
        "--format", required=True, help="the file's format: qcow2, raw, vmdk, vhd, vhdx or iso"
    )
    upload.add_argument("--name", required=True, help="the image's name in the catalogue")
    add_where_options(upload)
    upload.add_argument("--description", default="")
    upload.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    upload.add_argument(
        "--no-wait", action="store_true", help="return once the file is uploaded, while it is processed"
    )
    add_output_option(upload)
    upload.set_defaults(handler=commands.import_image, parser=upload)

    promote = images.add_parser(
        "promote",
        help="promote a volume snapshot (or one disk of a VM snapshot) to an image",
        description="Promote a volume snapshot, or one disk of a VM snapshot (--device), to a custom image "
        "in the snapshot's project and region. The image is `processing` until its disk is copied.",
    )
    promote.add_argument(
        "--snapshot", required=True, metavar="ID", help="the snapshot's id (or its name, when unique)"
    )
    promote.add_argument("--name", required=True, help="the image's name")
    promote.add_argument("--device", default="", help="which disk of a VM snapshot, e.g. vda")
    promote.add_argument("--description", default="")
    promote.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    add_output_option(promote)
    promote.set_defaults(handler=commands.promote_image, parser=promote)

    copy = add_image_command(
        images,
        "copy",
        "copy an image to another region and/or another project of its account",
        commands.copy_image,
        region_option="--source-region",
    )
    copy.add_argument("--target-region", metavar="REGION", help="default: the image's region")
    copy.add_argument(
        "--target-project",
        metavar="ACCOUNT/PROJECT",
        help="a project of the same account (default: the image's)",
    )
    copy.add_argument("--name", default="", help="the copy's name (default: the image's)")

    for name, help, handler in (
        ("share", "share an image with another project of its account", commands.share_image),
        ("unshare", "stop sharing an image with a project", commands.unshare_image),
    ):
        share = add_image_command(images, name, help, handler, project_option=False)
        share.add_argument("--project", required=True, metavar="ACCOUNT/PROJECT", help="the other project")

    visibility = add_image_command(
        images,
        "visibility",
        "project (default) or account: org-shared with every project of the account",
        commands.set_image_visibility,
    )
    visibility.add_argument("visibility", choices=("project", "account"))

    deprecate = add_image_command(
        images, "deprecate", "hide an image from the VM-create picker", commands.deprecate_image
    )
    deprecate.add_argument(
        "--at", metavar="ISO_TIME", help="from this time on, e.g. 2026-07-01T00:00 (UTC); default: now"
    )
    deprecate.add_argument("--note", default="", help="e.g. which image to use instead")
    add_image_command(images, "undeprecate", "offer a deprecated image again", commands.undeprecate_image)

    tag = add_image_command(images, "tag", "replace an image's tags (created-at is kept)", commands.tag_image)
    tag.add_argument("--tag", required=True, action="append", metavar="KEY=VALUE", help="repeatable")

    add_image_command(
        images,
        "retry",
        "process a failed or interrupted import, promotion or copy again",
        commands.retry_image,
    )
    add_image_command(images, "delete", "delete a custom image", commands.delete_image, output=False)

    picker = images.add_parser(
        "picker",
        help="the images a VM may boot from in a project and region",
        description="What the console's VM-create picker offers in --project and --region; deprecated "
        "images only with --show-deprecated.",
    )
    picker.add_argument("--project", required=True, metavar="ACCOUNT/PROJECT")
    picker.add_argument("--region", required=True)
    picker.add_argument("--show-deprecated", action="store_true")
    add_output_option(picker)
    picker.set_defaults(handler=commands.image_picker, parser=picker)

    why = images.add_parser(
        "why-missing",
        help="why an image is not in the VM-create picker, and the fix",
        description="Why the image named (or with the id) NAME_OR_ID is not offered when creating a VM in "
        "--project and --region: each image of that name, with its reason and fix.",
    )
    why.add_argument("image", metavar="NAME_OR_ID")
    why.add_argument("--project", required=True, metavar="ACCOUNT/PROJECT")
    why.add_argument("--region", required=True)
    why.add_argument("-o", "--output", choices=("text", "json"), default="text")
    why.set_defaults(handler=commands.why_image_missing, parser=why)

    limit = images.add_parser(
        "limit",
        help="raise a project's custom-image limit (default 50)",
        description="Raise a project's custom-image limit; a ticket reference is required.",
    )
    limit.add_argument("--project", required=True, metavar="ACCOUNT/PROJECT")
    limit.add_argument("--limit", required=True, type=int, metavar="N")
    limit.add_argument("--ticket", required=True, help="the support ticket's reference")
    add_output_option(limit)
    limit.set_defaults(handler=commands.raise_image_limit, parser=limit)
    add_attestation_commands(images)


def add_attestation_commands(images: Subcommands) -> None:
    """CIS attestation: sign an image, see whether it is attested, the project's image policy."""
    sign = add_image_command(
        images,
        "sign",
        "sign an image as CIS-hardened with your private key (only the signature is sent)",
        commands.sign_image,
    )
    sign.description = (
        "Sign the image's SHA-256 and cis-level tag, as yourself, with the private half of your registered "
        "signing key (image.cis-attestor). The key file stays on this machine; the console verifies the "
        "signature before it stores the attestation."
    )
    sign.add_argument("--key-name", required=True, metavar="NAME", help="your signing key's name (or id)")
    sign.add_argument("--key-file", required=True, metavar="PEM", help="its private key, e.g. key.pem")
    add_image_command(
        images,
        "attestation",
        "whether a valid CIS attestation covers an image, and all of them",
        commands.show_attestation,
    )

    policy = images.add_parser(
        "policy",
        help="show or set a project's image policy (CIS attestation off, audit or enforce)",
        description="Show the project's image policy; with --attestation, set it first (needs an account "
        "admin or a role with manage_image_quotas). enforce: VM-create refuses an image without a valid "
        "attestation; audit: it records what it would refuse in the audit log and goes on.",
    )
    policy.add_argument("--project", required=True, metavar="ACCOUNT/PROJECT")
    policy.add_argument("--attestation", choices=("off", "audit", "enforce"))
    add_output_option(policy)
    policy.set_defaults(handler=commands.image_policy, parser=policy)

    would_deny = images.add_parser(
        "would-deny",
        help="the images enforce would refuse in a project, and why",
        description="The available images offered to --project that VM-create would refuse under the "
        "enforce policy now, one per line with the reason (what audit mode logs as it happens).",
    )
    would_deny.add_argument("--project", required=True, metavar="ACCOUNT/PROJECT")
    would_deny.add_argument("-o", "--output", choices=("text", "json"), default="text")
    would_deny.set_defaults(handler=commands.would_deny, parser=would_deny)


def add_signing_key_commands(keys: Subcommands) -> None:
    add_list_command(keys, SIGNING_KEYS, "list CIS attestors' signing keys")

    create = keys.add_parser(
        "create",
        help="make an Ed25519 key pair here and register its public key",
        description="Generate an Ed25519 key pair on this machine, write the private key to --out (mode "
        "0600, never overwriting a file) and register the public key in --account as yours. Or register a "
        "public key you made yourself with --public-key (raw base64 or a PEM public key block).",
    )
    create.add_argument("--account", required=True, metavar="ACCOUNT")
    create.add_argument("--name", required=True, help="the key's name in the account, e.g. dana-laptop")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--out", metavar="FILE", help="where to write the new private key, e.g. key.pem")
    source.add_argument("--public-key", metavar="FILE", help="register this public key instead")
    add_output_option(create)
    create.set_defaults(handler=commands.create_signing_key, parser=create)

    revoke = keys.add_parser(
        "revoke",
        help="revoke a signing key: its attestations stop counting",
        description="Revoke a signing key (yours, or any in an account where you grant roles). Every "
        "attestation made with it stops counting at once; the key cannot be used again.",
    )
    revoke.add_argument("key", metavar="KEY", help="the key's id, or its name")
    revoke.add_argument("--account", metavar="ACCOUNT", help="look the name up in this account")
    add_output_option(revoke)
    revoke.set_defaults(handler=commands.revoke_signing_key, parser=revoke)


def add_quota_commands(quotas: Subcommands) -> None:
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
    storage.set_defaults(handler=commands.storage_quota, parser=storage)


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

    compute = add_group(top, "compute", "VMs, volumes, snapshots and images")
    add_vm_commands(add_group(compute, "vm", "virtual machines"))
    add_list_command(add_group(compute, "volume", "volumes"), VOLUMES, "list volumes")
    add_snapshot_commands(add_group(compute, "snapshot", "snapshots of volumes and VMs"))
    add_restore_commands(add_group(compute, "restore", "restores from snapshots"))
    add_image_commands(add_group(compute, "image", "images: the catalogue, imports, sharing, deprecation"))
    add_quota_commands(add_group(compute, "quota", "project quotas"))

    iam = add_group(top, "iam", "who may do what")
    add_role_commands(add_group(iam, "role", "role bindings"))
    add_signing_key_commands(add_group(iam, "signing-key", "CIS attestors' signing keys"))
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
