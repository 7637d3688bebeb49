"""What each command does, given its parsed arguments. Usage mistakes go to `args.parser.error` (exit 2);
everything else that goes wrong is a CLIError (exit 1)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from clouddigit import signing
from clouddigit.cli.client import Client, CLIError, configured_url, write_config
from clouddigit.cli.output import Column, binary_size, cell, fields, show, table, timestamp
from clouddigit.cli.resources import (
    DRILLS,
    IMAGE_LIMITS,
    IMAGE_POLICIES,
    IMAGES,
    POLICIES,
    RESTORES,
    ROLE_BINDINGS,
    SIGNING_KEYS,
    SNAPSHOTS,
    STORAGE_QUOTAS,
    VMS,
    VOLUMES,
    Resource,
)


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


def _header(resource: Resource) -> bool:
    """Tables have a header line only on a terminal, so that piped output is data lines only (as `gh`
    does): the spec counts snapshots per VM with `... snapshot list --policy P --since 24h | awk
    '{print $3}' | sort | uniq -c`, where a header would count as a VM named "VM"."""
    return sys.stdout.isatty()


def list_resource(args: argparse.Namespace) -> None:
    resource: Resource = args.resource
    params = {f.name: getattr(args, f.name) for f in resource.filters if getattr(args, f.name) is not None}
    items = Client.from_environment().list_all(resource.path, params)
    show(items, args.output, resource.columns, header=_header(resource))


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


# --- Snapshots --------------------------------------------------------------------------------------


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _resolve(client: Client, resource: Resource, what: str, value: str, project: str | None = None) -> str:
    """An id as it is; a name looked up among what the caller may see (the API's `name` filter matches
    parts of names, so only exact matches count)."""
    if _is_uuid(value):
        return value
    params = {"name": value, **({"project": project} if project else {})}
    matches = [item for item in client.list_all(resource.path, params) if item["name"] == value]
    if len(matches) == 1:
        return str(matches[0]["id"])
    if not matches:
        raise CLIError("NotFound", f"no {what} named {value!r} that you can see")
    where = ", ".join(f"{item['id']} in {item['project']}" for item in matches)
    raise CLIError("Ambiguous", f"{len(matches)} {what}s are named {value!r} ({where}): give the id")


def _snapshot_url(client: Client, args: argparse.Namespace, action: str = "") -> str:
    snapshot_id = _resolve(client, SNAPSHOTS, "snapshot", args.snapshot)
    return f"{SNAPSHOTS.path}{snapshot_id}/" + (f"{action}/" if action else "")


def _tags(args: argparse.Namespace, pairs: list[str], option: str) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            args.parser.error(f"{option} takes KEY=VALUE, not {pair!r}")
        tags[key.strip()] = value.strip()
    return tags


def _show_snapshot(snapshot: dict[str, Any], output: str) -> None:
    show(snapshot, output, SNAPSHOTS.columns, header=_header(SNAPSHOTS))


def create_snapshot(args: argparse.Namespace) -> None:
    body = {"consistency": args.consistency, "tags": _tags(args, args.tag, "--tag")}
    if args.name:
        body["name"] = args.name
    client = Client.from_environment()
    if args.vm:
        body["vm"] = _resolve(client, VMS, "VM", args.vm, args.project)
    else:
        body["volume"] = _resolve(client, VOLUMES, "volume", args.volume, args.project)
    _show_snapshot(client.create(SNAPSHOTS.path, body), args.output)


DISK_COLUMNS = (
    Column("DEVICE", "device"),
    Column("VOLUME", "volume_name"),
    Column("BOOTABLE", "bootable"),
    Column("SIZE", "size_bytes", binary_size),
    Column("LAYER", "layer"),
    Column("PARENT_LAYER", "parent_layer"),
    Column("CHECKSUM", "checksum"),
)


def _consistency_text(snapshot: dict[str, Any]) -> str:
    requested, achieved = snapshot["consistency_requested"], snapshot["consistency_achieved"]
    if not achieved:
        return f"{requested} requested (not taken yet)"
    text = achieved if achieved == requested else f"{achieved} ({requested} requested)"
    return f"{text}: {snapshot['consistency_reason']}" if snapshot["consistency_reason"] else text


def snapshot_detail(snapshot: dict[str, Any]) -> str:
    definition = snapshot.get("vm_definition") or {}
    origin = snapshot["origin"] + (f" ({snapshot['policy_name']})" if snapshot["policy_name"] else "")
    pairs = [
        ("ID", snapshot["id"]),
        ("NAME", snapshot["name"]),
        ("PROJECT", snapshot["project"]),
        ("REGION", snapshot["region"]),
        ("KIND", snapshot["kind"]),
        ("VM", snapshot["vm_name"]),
        ("FLAVOR", definition.get("flavor")),
        ("VPC", definition.get("vpc")),
        ("STATE", snapshot["state"]),
        ("STEP", snapshot["step"]),
        ("STUCK", snapshot["stuck_reason"]),
        ("LAST_ERROR", snapshot["last_error"]),
        ("CONSISTENCY", _consistency_text(snapshot)),
        ("ORIGIN", origin),
        ("TAGS", cell(snapshot["tags"])),
        ("BILLED", binary_size(snapshot["billed_bytes"])),
        ("RECLAIMABLE", binary_size(snapshot["reclaimable_bytes"])),
        ("CREATED", f"{timestamp(snapshot['created_at'])} by {snapshot['created_by']}"),
        ("COMPLETED", snapshot["completed_at"] and timestamp(snapshot["completed_at"])),
        ("EXPIRES", snapshot["expires_at"] and timestamp(snapshot["expires_at"])),
    ]
    parts = [fields(pairs), "", "DISKS", table(snapshot["disks"], DISK_COLUMNS)]
    if snapshot.get("restores"):
        parts += ["", "RESTORES", table(snapshot["restores"], RESTORES.columns)]
    return "\n".join(parts)


def show_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    snapshot = client.get(_snapshot_url(client, args))
    if args.output == "table":
        print(snapshot_detail(snapshot))
    else:
        show(snapshot, args.output, SNAPSHOTS.columns)


def delete_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    query = urllib.parse.urlencode({"confirm": args.confirm})
    snapshot = client.delete(f"{_snapshot_url(client, args)}?{query}") or {}
    print(
        f"Deleting snapshot {snapshot.get('name')} ({snapshot.get('id')}): its data merges into the "
        "snapshots and volumes that still need it, in the background"
    )


def tag_snapshot(args: argparse.Namespace) -> None:
    if not args.add and not args.remove:
        args.parser.error("give --add KEY=VALUE and/or --remove KEY")
    body = {"add": _tags(args, args.add, "--add"), "remove": args.remove}
    client = Client.from_environment()
    _show_snapshot(client.create(_snapshot_url(client, args, "tags"), body), args.output)


def hold_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show_snapshot(
        client.create(_snapshot_url(client, args, "hold"), {"hold": not args.release}), args.output
    )


def diagnosis_text(answer: dict[str, Any]) -> str:
    """The spec's "cd compute snapshot diagnose" answer: each waiting reason as cause / check / fix."""
    if not answer["findings"] and answer["state"] not in {"creating", "deleting", "error"}:
        return f"not waiting: {answer['state']}"
    lines = [f"snapshot {answer['name']} ({answer['id']}) is {answer['state']}"]
    if answer["step"]:
        lines[0] += f": {answer['step']}"
    if answer["stuck_reason"]:
        lines.append(answer["stuck_reason"])
    if not answer["findings"]:
        lines.append("no known waiting reason: the current step is within its usual time")
    for finding in answer["findings"]:
        lines += [
            "",
            f"cause:  {finding['cause']}",
            f"check:  {finding['check']}",
            f"fix:    {finding['fix']}",
            f"detail: {finding['detail'] or '-'}",
        ]
    return "\n".join(lines)


def diagnose_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    answer = client.get(_snapshot_url(client, args, "diagnose"))
    print(json.dumps(answer, indent=2) if args.output == "json" else diagnosis_text(answer))


def restore_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {"name": args.name, **({"disk": args.disk} if args.disk else {})}
    restore = client.create(_snapshot_url(client, args, "restore"), body)
    show(restore, args.output, RESTORES.columns, header=_header(RESTORES))


def restore_vm(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {"name": args.name, "vpc": args.vpc, "acknowledge_warnings": args.yes}
    if args.flavor:
        body["flavor"] = args.flavor
    restore = client.create(_snapshot_url(client, args, "restore-vm"), body)
    show(restore, args.output, RESTORES.columns, header=_header(RESTORES))
    for warning in restore["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)


def rollback_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    safety = client.create(_snapshot_url(client, args, "rollback"), {"confirm": args.confirm})
    _show_snapshot(safety, args.output)
    print(
        f"note: the replaced data is kept in safety snapshot {safety['name']} ({safety['id']}) until "
        f"{timestamp(safety['expires_at'])}",
        file=sys.stderr,
    )


def retry_snapshot(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show_snapshot(client.create(_snapshot_url(client, args, "retry"), {}), args.output)


def _operation_path(args: argparse.Namespace, resource: Resource, action: str = "") -> str:
    """The API path of the restore or drill named by its id (its name need not be unique)."""
    if not _is_uuid(args.id):
        args.parser.error(f"{args.id!r} is not an id: copy it from the list")
    return f"{resource.path}{args.id}/" + (f"{action}/" if action else "")


def retry_restore(args: argparse.Namespace) -> None:
    path = _operation_path(args, RESTORES, "retry")
    restore = Client.from_environment().create(path, {})
    show(restore, args.output, RESTORES.columns, header=_header(RESTORES))


def delete_restore(args: argparse.Namespace) -> None:
    path = _operation_path(args, RESTORES)
    Client.from_environment().delete(path)
    print(f"Deleted failed restore {args.id} and the volume or VM it had begun to make")


# --- Snapshot policies ------------------------------------------------------------------------------


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
    show(policy, args.output, POLICIES.columns, header=_header(POLICIES))


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


SIMULATED = (
    Column("VM", "vm"),
    Column("SLOT", "slot"),
    Column("CLASS", "class"),
    Column("OUTCOME", "outcome"),
    Column("KEPT", "kept"),
)


def simulate_policy(args: argparse.Namespace) -> None:
    body = {"project": args.project, "yaml": _read_policy(args.file), "days": args.days}
    if args.start:
        body["start"] = args.start
    outcome = Client.from_environment().create(f"{POLICIES.path}simulate/", body)
    if args.output == "json":
        print(json.dumps(outcome, indent=2))
        return
    show(outcome["created"], "table", SIMULATED, header=_header(POLICIES))
    print(
        f"existing snapshots: {len(outcome['existing_kept'])} kept, "
        f"{len(outcome['existing_deleted'])} deleted ({outcome['freed_bytes']} billed bytes freed)",
        file=sys.stderr,
    )


def delete_policy(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    policy_id = _policy_id(client, args.name, args.project)
    query = urllib.parse.urlencode({"snapshots": args.snapshots, "confirm": args.confirm})
    client.delete(f"{POLICIES.path}{policy_id}/?{query}")
    print(f"Deleted snapshot policy {args.name} ({args.snapshots} its snapshots)")


def retry_drill(args: argparse.Namespace) -> None:
    path = _operation_path(args, DRILLS, "retry")
    drill = Client.from_environment().create(path, {})
    show(drill, args.output, DRILLS.columns, header=_header(DRILLS))


def delete_drill(args: argparse.Namespace) -> None:
    path = _operation_path(args, DRILLS)
    Client.from_environment().delete(path)
    print(f"Deleted failed drill {args.id}")


# --- Images -----------------------------------------------------------------------------------------

MiB = 2**20
UPLOAD_CHUNK_BYTES = MiB
POLL_SECONDS = 2.0
PROGRESS_REDRAW_SECONDS = 0.2


def _image_path(image_id: str, action: str = "") -> str:
    return f"{IMAGES.path}{image_id}/" + (f"{action}/" if action else "")


def _image_url(client: Client, args: argparse.Namespace, action: str = "") -> str:
    """The API path of the image named by IMAGE: an id as it is; a name looked up among the images the
    caller may see, narrowed by the image's project and region when given (a copy to another region
    keeps its name, so the same name in two regions is usual)."""
    reference = args.image
    if _is_uuid(reference):
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
    show(image, output, IMAGES.columns, header=_header(IMAGES))


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
    image = client.get(_image_url(client, args))
    if args.output == "table":
        print(image_detail(image))
    else:
        _show_image(image, args.output)


class UploadProgress:
    """`uploading  42%  27.0/64.0 MiB  85.3 MiB/s`, redrawn in place on stderr a few times a second."""

    def __init__(self, total: int):
        self.total = total
        self.started = time.monotonic()
        self.drawn_at: float | None = None

    def update(self, sent: int) -> None:
        now = time.monotonic()
        if self.drawn_at is not None and now - self.drawn_at < PROGRESS_REDRAW_SECONDS and sent < self.total:
            return
        self.drawn_at = now
        rate = sent / max(now - self.started, 0.001) / MiB
        percent = 100 * sent // self.total
        sys.stderr.write(
            f"\ruploading {percent:3d}%  {sent / MiB:.1f}/{self.total / MiB:.1f} MiB  {rate:.1f} MiB/s "
        )
        sys.stderr.flush()

    def finish(self) -> None:
        if self.drawn_at is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()


class FileChunks:
    """An upload body: the open file, read 1 MiB at a time as the connection takes it, so a large image
    never sits in memory. Its length is the request's Content-Length."""

    def __init__(self, file: IO[bytes], size: int, progress: UploadProgress | None):
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
    progress = UploadProgress(size) if sys.stderr.isatty() else None
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


def _where(client: Client, args: argparse.Namespace) -> dict[str, str]:
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
            **_where(client, args),
            "name": args.name,
            "format": args.format,
            "size_bytes": size,
            "description": args.description,
            "tags": _tags(args, args.tag, "--tag"),
        }
        image = _send_file(client, client.create(IMAGES.path, body), file, size)
    if not args.no_wait:
        image = _wait_for_image(client, image)
    _show_image(image, args.output)


def promote_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {
        "snapshot": _resolve(client, SNAPSHOTS, "snapshot", args.snapshot),
        "name": args.name,
        "device": args.device,
        "description": args.description,
        "tags": _tags(args, args.tag, "--tag"),
    }
    _show_image(client.create(f"{IMAGES.path}promote/", body), args.output)


def copy_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    if not args.target_region and not args.target_project:
        raise CLIError("InvalidRequest", "Name where the copy goes: --target-region and/or --target-project.")
    body = {"name": args.name}
    body.update({"region": args.target_region} if args.target_region else {})
    body.update({"project": args.target_project} if args.target_project else {})
    _show_image(client.create(_image_url(client, args, "copy"), body), args.output)


def share_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show_image(client.create(_image_url(client, args, "share"), {"project": args.project}), args.output)


def unshare_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show_image(client.create(_image_url(client, args, "unshare"), {"project": args.project}), args.output)


def set_image_visibility(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {"visibility": args.visibility}
    _show_image(client.create(_image_url(client, args, "visibility"), body), args.output)


def deprecate_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {"at": args.at, "note": args.note}
    _show_image(client.create(_image_url(client, args, "deprecate"), body), args.output)


def undeprecate_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show_image(client.create(_image_url(client, args, "undeprecate"), {}), args.output)


def tag_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {"tags": _tags(args, args.tag, "--tag")}
    _show_image(client.create(_image_url(client, args, "tags"), body), args.output)


def retry_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    _show_image(client.create(_image_url(client, args, "retry"), {}), args.output)


def delete_image(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    client.delete(_image_url(client, args))
    print(f"Deleted image {args.image}")


def image_picker(args: argparse.Namespace) -> None:
    params = {"project": args.project, "region": args.region}
    if args.show_deprecated:
        params["show_deprecated"] = "true"
    images = Client.from_environment().get(f"{IMAGES.path}picker/", params)
    show(images, args.output, IMAGES.columns, header=_header(IMAGES))


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
    show(quota, args.output, IMAGE_LIMITS.columns, header=_header(IMAGE_LIMITS))


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
    show(usage, args.output, STORAGE_QUOTAS.columns, header=_header(STORAGE_QUOTAS))


def create_vm(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    body = {
        **_where(client, args),
        "name": args.name,
        "image": args.image,
        "flavor": args.flavor,
        "vpc": args.vpc,
        "tags": _tags(args, args.tag, "--tag"),
        "start": not args.no_start,
    }
    if args.boot_size_gib:
        body["boot_size_gib"] = args.boot_size_gib
    vm = client.create(VMS.path, body)
    show(vm, args.output, VMS.columns, header=_header(VMS))


# --- CIS attestation: signing keys, signing, the project image policy --------------------------------

ATTESTATION_COLUMNS = (
    Column("ID", "id"),
    Column("SIGNER", "signer"),
    Column("KEY", "key_name"),
    Column("CIS_LEVEL", "cis_level"),
    Column("SHA256", "image_sha256"),
    Column("CREATED", "created_at", timestamp),
    Column("KEY_REVOKED", "key_revoked_at", timestamp),
)


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
            header=_header(SIGNING_KEYS),
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
    show(key, args.output, SIGNING_KEYS.columns, header=_header(SIGNING_KEYS))


def _signing_key(client: Client, reference: str, account: str | None) -> dict[str, Any]:
    """A signing key named by id, or by name (in --account when given)."""
    if _is_uuid(reference):
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
    show(revoked, args.output, SIGNING_KEYS.columns, header=_header(SIGNING_KEYS))


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
    image_path = _image_url(client, args)
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
    show(made, args.output, ATTESTATION_COLUMNS, header=_header(IMAGES))


def attestation_text(image: dict[str, Any], status: dict[str, Any]) -> str:
    verdict = "valid" if status["valid"] else f"none valid: {status['reason']}"
    parts = [fields([("IMAGE", f"{image['name']} ({image['id']})"), ("ATTESTATION", verdict)])]
    if status["attestations"]:
        parts += ["", table(status["attestations"], ATTESTATION_COLUMNS)]
    return "\n".join(parts)


def show_attestation(args: argparse.Namespace) -> None:
    client = Client.from_environment()
    image_path = _image_url(client, args)
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
    show(policy, args.output, IMAGE_POLICIES.columns, header=_header(IMAGE_POLICIES))


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
