"""CIS attestation: attestors' signing keys (`clouddigit iam signing-key ...`), signing an image and its
attestation status, and the project's image policy (`clouddigit compute image sign|attestation|policy|
would-deny`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from clouddigit import signing
from clouddigit.cli.client import Client, CLIError
from clouddigit.cli.common import (
    PROJECT,
    ListFilter,
    Resource,
    Subcommands,
    add_list_command,
    add_output_option,
    header,
    is_uuid,
)
from clouddigit.cli.images import IMAGES, add_image_command, image_url
from clouddigit.cli.output import EMPTY, Column, fields, show, table, timestamp

SIGNING_KEYS = Resource(
    path="iam/signing-keys/",
    columns=(
        Column("ID", "id"),
        Column("NAME", "name"),
        Column("ACCOUNT", "account"),
        Column("OWNER", "owner"),
        Column("FINGERPRINT", "fingerprint", lambda value: value[:16] if value else EMPTY),
        Column("CREATED", "created_at", timestamp),
        Column("REVOKED", "revoked_at", timestamp),
    ),
    filters=(
        ListFilter("account", "account slug", "ACCOUNT"),
        ListFilter("owner", "the attestor's username", "USER"),
        ListFilter("name", "exact key name", "NAME"),
        ListFilter(
            "revoked", "true: only revoked keys; false: only keys in use", "BOOL", choices=("true", "false")
        ),
    ),
)

IMAGE_POLICIES = Resource(
    path="compute/image-policies/",
    columns=(
        Column("PROJECT", "project"),
        Column("ATTESTATION", "attestation"),
        Column("UPDATED_BY", "updated_by"),
        Column("UPDATED", "updated_at", timestamp),
    ),
    filters=(PROJECT,),
)


ATTESTATION_COLUMNS = (
    Column("ID", "id"),
    Column("SIGNER", "signer"),
    Column("KEY", "key_name"),
    Column("CIS_LEVEL", "cis_level"),
    Column("SHA256", "image_sha256"),
    Column("CREATED", "created_at", timestamp),
    Column("KEY_REVOKED", "key_revoked_at", timestamp),
)


def add_image_commands(images: Subcommands) -> None:
    """CIS attestation: sign an image, see whether it is attested, the project's image policy."""
    sign = add_image_command(
        images,
        "sign",
        "sign an image as CIS-hardened with your private key (only the signature is sent)",
        sign_image,
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
        show_attestation,
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
    policy.set_defaults(handler=image_policy, parser=policy)

    deny = images.add_parser(
        "would-deny",
        help="the images enforce would refuse in a project, and why",
        description="The available images offered to --project that VM-create would refuse under the "
        "enforce policy now, one per line with the reason (what audit mode logs as it happens).",
    )
    deny.add_argument("--project", required=True, metavar="ACCOUNT/PROJECT")
    deny.add_argument("-o", "--output", choices=("text", "json"), default="text")
    deny.set_defaults(handler=would_deny, parser=deny)


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
    create.set_defaults(handler=create_signing_key, parser=create)

    revoke = keys.add_parser(
        "revoke",
        help="revoke a signing key: its attestations stop counting",
        description="Revoke a signing key (yours, or any in an account where you grant roles). Every "
        "attestation made with it stops counting at once; the key cannot be used again.",
    )
    revoke.add_argument("key", metavar="KEY", help="the key's id, or its name")
    revoke.add_argument("--account", metavar="ACCOUNT", help="look the name up in this account")
    add_output_option(revoke)
    revoke.set_defaults(handler=revoke_signing_key, parser=revoke)


def _write_private_key(path: Path, pem: bytes) -> None:
    """Write a new private key readable by its owner only; an existing file is never overwritten (it
    may be the only copy of another key)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CLIError(
            "FileExists", f"{path} exists; choose another --out (a key file is never overwritten)"
        ) from None
    except OSError as error:
        raise CLIError("CannotWrite", f"{path}: {error.strerror or error}") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    path.chmod(0o600)


def create_signing_key(args: argparse.Namespace) -> None:
    """Generate a key pair here, keep the private half in --out, register the public half; or register
    the public key an attestor made with openssl (--public-key)."""
    client = Client.from_environment()
    body = {"account": args.account, "name": args.name}
    if args.public_key:
        try:
            body["public_key"] = Path(args.public_key).read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise CLIError(
                "CannotRead", f"{args.public_key}: {getattr(error, 'strerror', None) or error}"
            ) from None
        show(
            client.create(SIGNING_KEYS.path, body),
            args.output,
            SIGNING_KEYS.columns,
            header=header(SIGNING_KEYS),
        )
        return
    out = Path(args.out)
    pem, body["public_key"] = signing.generate_key_pair()
    _write_private_key(out, pem)
    try:
        key = client.create(SIGNING_KEYS.path, body)
    except CLIError:
        out.unlink(missing_ok=True)  # a private key whose public half is not registered is of no use
        raise
    print(
        f"Wrote the private key to {out} (mode 0600). Keep it safe: the console never sees it.",
        file=sys.stderr,
    )
    show(key, args.output, SIGNING_KEYS.columns, header=header(SIGNING_KEYS))


def _signing_key(client: Client, reference: str, account: str | None) -> dict[str, Any]:
    """A signing key named by id, or by name (in --account when given)."""
    if is_uuid(reference):
        return client.get(f"{SIGNING_KEYS.path}{reference}/")
    matches = client.list_all(
        SIGNING_KEYS.path, {"name": reference, **({"account": account} if account else {})}
    )
    if len(matches) == 1:
        return matches[0]
    where = f" in account {account}" if account else ""
    if not matches:
        raise CLIError("NotFound", f"no signing key named {reference!r}{where} that you can see")
    found = ", ".join(f"{key['id']} in {key['account']}" for key in matches)
    raise CLIError(
        "Ambiguous", f"{len(matches)} signing keys are named {reference!r} ({found}): pass --account"
    )


def revoke_signing_key(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    key = _signing_key(client, args.key, args.account)
    revoked = client.create(f"{SIGNING_KEYS.path}{key['id']}/revoke/", {})
    show(revoked, args.output, SIGNING_KEYS.columns, header=header(SIGNING_KEYS))


def _read_private_key(path: str) -> bytes:
    try:
        pem = Path(path).read_bytes()
        mode = Path(path).stat().st_mode
    except OSError as error:
        raise CLIError("CannotRead", f"{path}: {error.strerror or error}") from None
    if mode & 0o077:
        print(f"warning: {path} is readable by others (mode {mode & 0o777:o}); chmod 600 it", file=sys.stderr)
    return pem


def sign_image(args: argparse.Namespace) -> None:
    """Sign the image's SHA-256 and cis-level as the key's owner (the console accepts only your own key,
    so the owner is you) with the private key file, here; only the signature is sent."""
    client = Client.from_environment()
    image_path = image_url(client, args)
    image = client.get(image_path)
    if image["state"] != "available" or not image["sha256"]:
        raise CLIError(
            "NotAvailable", f"image {image['name']} is {image['state']}; sign it once it is available"
        )
    cis_level = image["tags"].get("cis-level", "")
    if not cis_level:
        raise CLIError(
            "MissingCisLevel",
            f"image {image['name']} has no cis-level tag: tag it first with the CIS level it was hardened "
            f"to (clouddigit compute image tag {image['id']} --tag cis-level=1 ..., which replaces all its "
            "tags)",
        )
    account = (image["project"] or "").partition("/")[0] or None
    key = _signing_key(client, args.key_name, account)
    if key["revoked"]:
        raise CLIError("KeyRevoked", f"signing key {key['name']} was revoked; register a new one")
    pem = _read_private_key(args.key_file)
    try:
        if signing.public_key_of(pem) != key["public_key"]:
            raise CLIError(
                "KeyMismatch",
                f"{args.key_file} is not the private half of signing key {key['name']} "
                f"(fingerprint {key['fingerprint'][:16]})",
            )
        signature = signing.sign(pem, image["sha256"], cis_level, key["owner"])
    except ValueError as error:
        raise CLIError(
            "BadKeyFile", f"{args.key_file}: not an unencrypted Ed25519 PEM private key ({error})"
        ) from None
    made = client.create(f"{image_path}attest/", {"key": key["id"], "signature": signature})
    show(made, args.output, ATTESTATION_COLUMNS, header=header(IMAGES))


def attestation_text(image: dict[str, Any], status: dict[str, Any]) -> str:
    verdict = "valid" if status["valid"] else f"none valid: {status['reason']}"
    parts = [fields([("IMAGE", f"{image['name']} ({image['id']})"), ("ATTESTATION", verdict)])]
    if status["attestations"]:
        parts += ["", table(status["attestations"], ATTESTATION_COLUMNS)]
    return "\n".join(parts)


def show_attestation(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    image_path = image_url(client, args)
    status = client.get(f"{image_path}attestation/")
    if args.output == "json":
        print(json.dumps(status, indent=2))
    elif args.output == "id":
        if status["attestation"]:  # the one that counts: nothing printed when none does
            print(status["attestation"]["id"])
    else:
        print(attestation_text(client.get(image_path), status))


def _image_policy(client: Client, project: str) -> dict[str, Any]:
    found = client.list_all(IMAGE_POLICIES.path, {"project": project})
    if len(found) != 1:
        raise CLIError("NotFound", f"no project {project!r} whose images you can see")
    return found[0]


def image_policy(args: argparse.Namespace) -> None:
    """Show the project's image policy; with --attestation, set it first."""
    client = Client.from_environment()
    policy = _image_policy(client, args.project)
    if args.attestation:
        policy = client.replace(
            f"{IMAGE_POLICIES.path}{policy['project_id']}/", {"attestation": args.attestation}
        )
    show(policy, args.output, IMAGE_POLICIES.columns, header=header(IMAGE_POLICIES))


def would_deny(args: argparse.Namespace) -> None:
    """One line per image VM-create would refuse under `enforce`, with the reason."""
    client = Client.from_environment()
    policy = _image_policy(client, args.project)
    denied = client.get(f"{IMAGE_POLICIES.path}{policy['project_id']}/would-deny/")
    if args.output == "json":
        print(json.dumps(denied, indent=2))
        return
    for item in denied:
        print(f"{item['name']} ({item['image']}) of {item['project']} in {item['region']}: {item['reason']}")
