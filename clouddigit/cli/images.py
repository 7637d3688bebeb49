"""`clouddigit compute image ...`: the image catalogue: import (upload), promote, copy, share, visibility,
deprecate, tag, retry, delete, the VM-create picker and why an image is missing from it, the image limit.
(Signing and the project's image policy are in attestation.py.)"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from clouddigit.cli.client import Client, CLIError
from clouddigit.cli.common import (
    NAME,
    PROJECT,
    REGION,
    ListFilter,
    Resource,
    Subcommands,
    add_list_command,
    add_output_option,
    add_where_options,
    header,
    is_uuid,
    resolve,
    tags,
    where,
)
from clouddigit.cli.output import Column, Progress, binary_size, cell, fields, show, timestamp
from clouddigit.cli.snapshots import SNAPSHOTS


def _image_format(image: dict) -> str | None:
    """What the header inspection found; until then, what the uploader declared."""
    return image.get("detected_format") or image.get("declared_format")


IMAGES = Resource(
    path="compute/images/",
    columns=(
        Column("ID", "id"),
        Column("NAME", "name"),
        Column("SLOT", "slot"),
        Column("PROJECT", "project"),
        Column("REGION", "region"),
        Column("STATE", "state"),
        Column("FORMAT", "detected_format", pick=_image_format),
        Column("SIZE", "virtual_size", binary_size),
        Column("VISIBILITY", "visibility"),
        Column("DEPRECATED", "deprecated"),
        Column("TAGS", "tags"),
    ),
    filters=(
        PROJECT,
        REGION,
        ListFilter("slot", "stock, hardened or custom", "SLOT", choices=("stock", "hardened", "custom")),
        ListFilter("shared", "only images other projects share with yours", flag=True),
        ListFilter("state", "uploading, processing, available or failed", "STATE"),
        ListFilter("disk_format", "qcow2, raw, vmdk ...: as inspection found, else as declared", "FORMAT"),
        NAME,
    ),
)

IMAGE_LIMITS = Resource(
    path="compute/image-limits/",
    columns=(
        Column("ID", "id"),
        Column("PROJECT", "project"),
        Column("LIMIT", "limit"),
        Column("TICKET", "ticket"),
        Column("SET_BY", "set_by"),
        Column("CREATED", "created_at", timestamp),
    ),
    filters=(),
)


def add_commands(images: Subcommands) -> None:
    """`clouddigit compute image ...`; attestation.py adds signing and the image policy after these."""
    add_list_command(images, IMAGES, "list the image catalogue: stock, hardened and custom images")
    add_image_command(
        images, "show", "an image's details: checksums, checklist, deprecation, shares", show_image
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
    upload.set_defaults(handler=import_image, parser=upload)

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
    promote.set_defaults(handler=promote_image, parser=promote)

    copy = add_image_command(
        images,
        "copy",
        "copy an image to another region and/or another project of its account",
        copy_image,
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
        ("share", "share an image with another project of its account", share_image),
        ("unshare", "stop sharing an image with a project", unshare_image),
    ):
        share = add_image_command(images, name, help, handler, project_option=False)
        share.add_argument("--project", required=True, metavar="ACCOUNT/PROJECT", help="the other project")

    visibility = add_image_command(
        images,
        "visibility",
        "project (default) or account: org-shared with every project of the account",
        set_image_visibility,
    )
    visibility.add_argument("visibility", choices=("project", "account"))

    deprecate = add_image_command(
        images, "deprecate", "hide an image from the VM-create picker", deprecate_image
    )
    deprecate.add_argument(
        "--at", metavar="ISO_TIME", help="from this time on, e.g. 2026-07-01T00:00 (UTC); default: now"
    )
    deprecate.add_argument("--note", default="", help="e.g. which image to use instead")
    add_image_command(images, "undeprecate", "offer a deprecated image again", undeprecate_image)

    tag = add_image_command(images, "tag", "replace an image's tags (created-at is kept)", tag_image)
    tag.add_argument("--tag", required=True, action="append", metavar="KEY=VALUE", help="repeatable")

    add_image_command(
        images,
        "retry",
        "process a failed or interrupted import, promotion or copy again",
        retry_image,
    )
    add_image_command(images, "delete", "delete a custom image", delete_image, output=False)

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
    picker.set_defaults(handler=image_picker, parser=picker)

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
    why.set_defaults(handler=why_image_missing, parser=why)

    limit = images.add_parser(
        "limit",
        help="raise a project's custom-image limit (default 50)",
        description="Raise a project's custom-image limit; a ticket reference is required.",
    )
    limit.add_argument("--project", required=True, metavar="ACCOUNT/PROJECT")
    limit.add_argument("--limit", required=True, type=int, metavar="N")
    limit.add_argument("--ticket", required=True, help="the support ticket's reference")
    add_output_option(limit)
    limit.set_defaults(handler=raise_image_limit, parser=limit)


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


MiB = 2**20
UPLOAD_CHUNK_BYTES = MiB
POLL_SECONDS = 2.0


def _image_path(image_id: str, action: str = "") -> str:
    return f"{IMAGES.path}{image_id}/" + (f"{action}/" if action else "")


def image_url(client: Client, args: argparse.Namespace, action: str = "") -> str:
    """The API path of the image named by IMAGE: an id as it is; a name looked up among the images the
    caller may see, narrowed by the image's project and region when given (a copy to another region
    keeps its name, so the same name in two regions is usual)."""
    reference = args.image
    if is_uuid(reference):
        return _image_path(reference, action)
    params = {"name": reference}
    for name, value in (("project", getattr(args, "image_project", None)), ("region", args.image_region)):
        if value:
            params[name] = value
    matches = [image for image in client.list_all(IMAGES.path, params) if image["name"] == reference]
    if len(matches) == 1:
        return _image_path(matches[0]["id"], action)
    where = "".join(f" in {params[name]}" for name in ("project", "region") if name in params)
    if not matches:
        raise CLIError("NotFound", f"no image named {reference!r}{where} that you can see")
    found = ", ".join(
        f"{image['id']} in {image['project'] or 'Cloud Digit'} {image['region']}" for image in matches
    )
    raise CLIError("Ambiguous", f"{len(matches)} images are named {reference!r} ({found}): give the id")


def _show_image(image: dict[str, Any], output: str) -> None:
    show(image, output, IMAGES.columns, header=header(IMAGES))


def _deprecation_text(image: dict[str, Any]) -> str:
    if not image["deprecated_at"]:
        return "no"
    when = timestamp(image["deprecated_at"])
    text = f"since {when}" if image["deprecated"] else f"from {when} on (scheduled)"
    return f"{text}: {image['deprecation_note']}" if image["deprecation_note"] else text


def _source_text(image: dict[str, Any]) -> str:
    if image["source_snapshot"]:
        return f"{image['source']} (snapshot {image['source_snapshot']})"
    if image["copied_from"]:
        return f"{image['source']} (from image {image['copied_from']})"
    return image["source"]


def _format_text(image: dict[str, Any]) -> str | None:
    detected, declared = image["detected_format"], image["declared_format"]
    if detected and declared and detected != declared:
        return f"{detected} (declared {declared})"
    return detected or (declared and f"{declared} (declared, not inspected yet)")


def image_detail(image: dict[str, Any]) -> str:
    missing = image["missing_tags"]
    pairs = [
        ("ID", image["id"]),
        ("NAME", image["name"]),
        ("SLOT", image["slot"]),
        ("PROJECT", image["project"] or "Cloud Digit"),
        ("REGION", image["region"]),
        ("DESCRIPTION", image["description"]),
        ("STATE", image["state"]),
        ("STEP", image["step"]),
        ("LAST_ERROR", image["last_error"]),
        ("SOURCE", _source_text(image)),
        ("FORMAT", _format_text(image)),
        ("VIRTUAL_SIZE", binary_size(image["virtual_size"])),
        ("STORED", binary_size(image["stored_bytes"])),
        ("SHA256", image["sha256"]),
        ("GUEST_SHA256", image["guest_sha256"]),
        ("TAGS", cell(image["tags"])),
        ("CHECKLIST", f"missing tags: {', '.join(missing)}" if missing else "complete"),
        ("OPENSCAP", image["openscap_score"]),
        ("VISIBILITY", image["visibility"]),
        ("SHARED_WITH", ", ".join(image["shared_with"])),
        ("DEPRECATED", _deprecation_text(image)),
        ("CREATED", f"{timestamp(image['created_at'])} by {image['created_by']}"),
    ]
    return fields(pairs)


def show_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    image = client.get(image_url(client, args))
    if args.output == "table":
        print(image_detail(image))
    else:
        _show_image(image, args.output)


class FileChunks:
    """An upload body: the open file, read 1 MiB at a time as the connection takes it, so a large image
    never sits in memory. Its length is the request's Content-Length."""

    def __init__(self, file: IO[bytes], size: int, progress: Progress | None):
        self.file = file
        self.size = size
        self.progress = progress

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        while chunk := self.file.read(UPLOAD_CHUNK_BYTES):
            yield chunk
            sent += len(chunk)
            if self.progress is not None:
                self.progress.update(sent)


def _image_failure(image: dict[str, Any]) -> CLIError:
    """A failed image's recorded error (`Code: message`) as the error the API would have answered, with
    the console's hint (e.g. how to find a file's real format)."""
    hint = image.get("hint") or ""
    code, sep, message = image["last_error"].partition(": ")
    if sep and code.isidentifier() and code[:1].isupper():
        return CLIError(code, message, hint)
    reason = image["last_error"] or "no reason given"
    return CLIError("ImageFailed", f"image {image['name']} failed: {reason}", hint)


def _send_file(client: Client, image: dict[str, Any], file: IO[bytes], size: int) -> dict[str, Any]:
    progress = Progress(size, "uploading") if sys.stderr.isatty() else None
    try:
        return client.upload(image["upload_url"], FileChunks(file, size, progress), size)
    except CLIError as error:
        if error.code not in {"ImageUploadFailed", "ConnectionFailed", "Timeout"}:
            raise
        # The image records why it was refused, with a hint; and a console that refuses a file may close
        # the connection before it has read all of it, so ask the image.
        current = client.get(_image_path(image["id"]))
        if current["state"] == "failed":
            raise _image_failure(current) from None
        if error.code == "ImageUploadFailed":
            raise
        if current["state"] == "uploading":
            raise CLIError(
                "UploadInterrupted",
                f"{error.message}. Image {image['name']} ({image['id']}) is still waiting for its file: "
                "delete it and import again.",
            ) from None
        return current
    finally:
        if progress is not None:
            progress.finish()


def _wait_for_image(client: Client, image: dict[str, Any]) -> dict[str, Any]:
    """Poll until the worker has stored the image (or failed to); its steps go to stderr on a terminal."""
    step = None
    while image["state"] == "processing":
        if sys.stderr.isatty() and image["step"] and image["step"] != step:
            step = image["step"]
            print(f"processing: {step}", file=sys.stderr)
        time.sleep(POLL_SECONDS)
        image = client.get(_image_path(image["id"]))
    if image["state"] == "failed":
        raise _image_failure(image)
    return image


def import_image(args: argparse.Namespace) -> None:
    try:
        file = Path(args.file).open("rb")
    except OSError as error:
        raise CLIError("CannotRead", f"{args.file}: {error.strerror or error}") from None
    with file:
        size = os.fstat(file.fileno()).st_size
        if size == 0:
            raise CLIError("ImageUploadFailed", f"{args.file} is empty; choose the image file.")
        client = Client.from_environment()
        body = {
            **where(client, args),
            "name": args.name,
            "format": args.format,
            "size_bytes": size,
            "description": args.description,
            "tags": tags(args, args.tag, "--tag"),
        }
        image = _send_file(client, client.create(IMAGES.path, body), file, size)
    if not args.no_wait:
        image = _wait_for_image(client, image)
    _show_image(image, args.output)


def promote_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {
        "snapshot": resolve(client, SNAPSHOTS, "snapshot", args.snapshot),
        "name": args.name,
        "device": args.device,
        "description": args.description,
        "tags": tags(args, args.tag, "--tag"),
    }
    _show_image(client.create(f"{IMAGES.path}promote/", body), args.output)


def copy_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    if not args.target_region and not args.target_project:
        raise CLIError("InvalidRequest", "Name where the copy goes: --target-region and/or --target-project.")
    body = {"name": args.name}
    body.update({"region": args.target_region} if args.target_region else {})
    body.update({"project": args.target_project} if args.target_project else {})
    _show_image(client.create(image_url(client, args, "copy"), body), args.output)


def share_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show_image(client.create(image_url(client, args, "share"), {"project": args.project}), args.output)


def unshare_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show_image(client.create(image_url(client, args, "unshare"), {"project": args.project}), args.output)


def set_image_visibility(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {"visibility": args.visibility}
    _show_image(client.create(image_url(client, args, "visibility"), body), args.output)


def deprecate_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {"at": args.at, "note": args.note}
    _show_image(client.create(image_url(client, args, "deprecate"), body), args.output)


def undeprecate_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show_image(client.create(image_url(client, args, "undeprecate"), {}), args.output)


def tag_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {"tags": tags(args, args.tag, "--tag")}
    _show_image(client.create(image_url(client, args, "tags"), body), args.output)


def retry_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show_image(client.create(image_url(client, args, "retry"), {}), args.output)


def delete_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    client.delete(image_url(client, args))
    print(f"Deleted image {args.image}")


def image_picker(args: argparse.Namespace) -> None:
    params = {"project": args.project, "region": args.region}
    if args.show_deprecated:
        params["show_deprecated"] = "true"
    images = Client.from_environment().get(f"{IMAGES.path}picker/", params)
    show(images, args.output, IMAGES.columns, header=header(IMAGES))


def why_missing_text(reasons: list[dict[str, Any]]) -> str:
    blocks = []
    for reason in reasons:
        lines = []
        if reason["image"]:
            owner = reason["project"] or "Cloud Digit"
            lines.append(f"image {reason['name']} ({reason['image']}) of {owner} in {reason['region']}")
        lines += [f"reason: {reason['reason']}", f"fix:    {reason['fix']}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def why_image_missing(args: argparse.Namespace) -> None:
    params = {"project": args.project, "region": args.region, "image": args.image}
    reasons = Client.from_environment().get(f"{IMAGES.path}why-missing/", params)
    print(json.dumps(reasons, indent=2) if args.output == "json" else why_missing_text(reasons))


def raise_image_limit(args: argparse.Namespace) -> None:
    body = {"project": args.project, "limit": args.limit, "ticket": args.ticket}
    quota = Client.from_environment().create(IMAGE_LIMITS.path, body)
    show(quota, args.output, IMAGE_LIMITS.columns, header=header(IMAGE_LIMITS))
