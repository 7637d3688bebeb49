"""What the CLI lists: each resource's API path, its table columns and its list filters.

A new resource (snapshots, images...) is one more entry here plus one `add_list_command` call in main.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from clouddigit.cli.output import EMPTY, Column, binary_size, cell, timestamp


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
    path: str
    columns: tuple[Column, ...]
    filters: tuple[ListFilter, ...]


PROJECT = ListFilter("project", "account/project (or a project id)", "ACCOUNT/PROJECT")
REGION = ListFilter("region", "region slug, e.g. bd-dha-1", "REGION")
STATE = ListFilter("state", "state, e.g. running", "STATE")
TAG = ListFilter("tag", "carries this tag", "KEY=VALUE")
NAME = ListFilter("name", "name contains", "TEXT")

VMS = Resource(
    path="compute/vms/",
    columns=(
        Column("ID", "id"),
        Column("NAME", "name"),
        Column("PROJECT", "project"),
        Column("REGION", "region"),
        Column("STATE", "state"),
        Column("FLAVOR", "flavor"),
        Column("VPC", "vpc"),
        Column("TAGS", "tags"),
    ),
    filters=(
        PROJECT,
        REGION,
        STATE,
        ListFilter("flavor", "flavor, e.g. std-2x4", "FLAVOR"),
        ListFilter("vpc", "VPC name", "VPC"),
        TAG,
        NAME,
    ),
)

VOLUMES = Resource(
    path="compute/volumes/",
    columns=(
        Column("ID", "id"),
        Column("NAME", "name"),
        Column("PROJECT", "project"),
        Column("REGION", "region"),
        Column("STATE", "state"),
        Column("SIZE", "size_bytes", binary_size),
        Column("VM", "vm_name"),
        Column("DEVICE", "device"),
        Column("BOOTABLE", "bootable"),
        Column("TAGS", "tags"),
    ),
    filters=(
        PROJECT,
        REGION,
        STATE,
        ListFilter("vm", "attached to the VM of this name", "VM_NAME"),
        TAG,
        NAME,
    ),
)

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


def _volume_names(snapshot: dict) -> list[str]:
    return [disk["volume_name"] for disk in snapshot.get("disks") or []]


def _consistency(snapshot: dict) -> str:
    """What the snapshot got; while it is being taken, what was asked for, with a question mark."""
    return snapshot.get("consistency_achieved") or f"{snapshot.get('consistency_requested')}?"


SNAPSHOTS = Resource(
    path="compute/snapshots/",
    # VM is the third column: the spec's per-VM count pipes the list into `awk '{print $3}'`.
    columns=(
        Column("ID", "id"),
        Column("NAME", "name"),
        Column("VM", "vm_name"),
        Column("VOLUMES", "disks", pick=_volume_names),
        Column("STATE", "state"),
        Column("CONSISTENCY", "consistency_achieved", pick=_consistency),
        Column("CREATED", "created_at", timestamp),
        Column("POLICY", "policy_name"),
        Column("TAGS", "tags"),
    ),
    filters=(
        ListFilter("vm", "of the VM with this id or name", "VM"),
        ListFilter("volume", "capturing the volume with this id or name", "VOLUME"),
        ListFilter("policy", "created by this snapshot policy", "POLICY"),
        ListFilter("since", "created in the last 30m, 24h, 7d ... or since an ISO timestamp", "AGE"),
        ListFilter("latest", "only the newest N (after the other filters)", "N"),
        ListFilter("state", "creating, available, deleting or error", "STATE"),
        ListFilter("origin", "manual, policy or safety", "ORIGIN"),
        ListFilter("kind", "volume or vm", "KIND"),
        TAG,
        PROJECT,
        REGION,
        NAME,
    ),
)

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


POLICIES = Resource(
    path="compute/snapshot-policies/",
    columns=(
        Column("ID", "id"),
        Column("NAME", "name"),
        Column("PROJECT", "project"),
        Column("SCHEDULE", "schedule"),
        Column("RETENTION", "retention"),
        Column("VM_TAGS", "scope", pick=lambda policy: (policy.get("scope") or {}).get("vm_tags")),
        Column("APPLIED_BY", "applied_by"),
        Column("UPDATED", "updated_at", timestamp),
    ),
    filters=(PROJECT, NAME),
)

DRILLS = Resource(
    path="compute/restore-drills/",
    columns=(
        Column("ID", "id"),
        Column("VM", "vm_name"),
        Column("SNAPSHOT", "snapshot_name"),
        Column("POLICY", "policy"),
        Column("STATE", "state"),
        Column("SECONDS", "seconds", lambda value: EMPTY if value is None else f"{value:.1f}"),
        Column("STARTED", "started_at", timestamp),
        Column("ERROR", "error"),
    ),
    filters=(
        PROJECT,
        ListFilter("policy", "drills of the snapshot policy with this name", "POLICY"),
        ListFilter("state", "running, passed or failed", "STATE"),
    ),
)


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
