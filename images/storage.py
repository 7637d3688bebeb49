"""The project storage quota: the bytes a project keeps in snapshots and custom images, against one
limit (the spec's "Project storage quota", bumpable via ticket like every quota).

What counts (see docs/decisions.md, "Project storage quota"):
- a snapshot: its billed bytes (zero at creation, measured every 15 minutes as the volume diverges);
- an available custom image: its stored bytes (the qcow2 file in the object store);
- an image still in flight: what it will store at most. A conversion can grow a file up to the disk's
  virtual size (a 3 MB compressed qcow2 of a 2 GB disk stores 2 GB), so an import or a promotion
  reserves its virtual size; a copy reserves its source's stored bytes.
Failed images and platform images count nothing.

An import, promotion or copy is refused when its reservation would take the project past the quota, before
any byte is converted or copied; a snapshot (which costs nothing when taken) is refused only while the
project is already at or over its quota.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Case, F, Sum, Value, When
from django.db.models.functions import Coalesce

from clouddigit.access import actor_name, require
from clouddigit.audit.log import audited
from clouddigit.compute.models import Project
from clouddigit.compute.permissions import Perm
from clouddigit.errors import InvalidRequest, ServiceError
from images.models import Image, StorageQuota
from snapshots.models import Snapshot

GiB = 2**30
MAX_LIMIT_GIB = 1024 * 1024  # 1 PiB
FIX = "Free space, or ask an admin to raise the project's storage quota with a ticket."


class StorageQuotaExceeded(ServiceError):
    code = "StorageQuotaExceeded"
    status = 409


def size_text(size: int) -> str:
    """Bytes as people quote quotas: 1.5 TiB, 32.0 GiB, 64.0 MiB."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size / 2**20:.1f} MiB"


@dataclass(frozen=True)
class StorageUsage:
    project: Project
    snapshot_bytes: int
    image_bytes: int
    limit_bytes: int
    ticket: str = ""

    @property
    def used_bytes(self) -> int:
        return self.snapshot_bytes + self.image_bytes

    @property
    def full(self) -> bool:
        return self.used_bytes >= self.limit_bytes

    def __str__(self) -> str:
        snapshots, images = size_text(self.snapshot_bytes), size_text(self.image_bytes)
        return (
            f"{self.project} uses {size_text(self.used_bytes)} of its {size_text(self.limit_bytes)} "
            f"storage quota (snapshots {snapshots}, images {images})"
        )


def _raised(project: Project) -> StorageQuota | None:
    return StorageQuota.objects.filter(project=project).first()


def image_bytes(project: Project) -> int:
    """Stored bytes of the project's available custom images plus what those in flight will store."""
    counted = Image.objects.counting_against_quota(project).aggregate(
        total=Sum(
            Case(
                When(state=Image.State.AVAILABLE, then=Coalesce(F("stored_bytes"), Value(0))),
                When(
                    source=Image.Source.COPY,
                    then=Coalesce(F("copied_from__stored_bytes"), F("virtual_size"), Value(0)),
                ),
                default=Coalesce(F("virtual_size"), Value(0)),
            )
        )
    )
    return counted["total"] or 0


def usage(project: Project) -> StorageUsage:
    raised = _raised(project)
    billed = Snapshot.objects.filter(project=project).aggregate(total=Sum("billed_bytes"))["total"] or 0
    return StorageUsage(
        project=project,
        snapshot_bytes=billed,
        image_bytes=image_bytes(project),
        limit_bytes=raised.limit_bytes if raised else settings.PROJECT_STORAGE_QUOTA_BYTES,
        ticket=raised.ticket if raised else "",
    )


def check_room(*, project: Project, adding: int, what: str, field: str | None = None) -> None:
    """Refuse `what` (an import, promotion or copy that will store up to `adding` bytes) when it would
    take the project past its quota."""
    used = usage(project)
    if used.used_bytes + adding > used.limit_bytes:
        raise StorageQuotaExceeded(
            f"{what} can store up to {size_text(adding)}, and {used}: it would exceed the quota by "
            f"{size_text(used.used_bytes + adding - used.limit_bytes)}. {FIX}",
            field=field,
        )


def check_not_full(*, project: Project, what: str) -> None:
    """Refuse `what` while the project is at or over its quota (a new snapshot costs nothing yet, but
    grows with every write)."""
    used = usage(project)
    if used.full:
        raise StorageQuotaExceeded(f"{used}, so {what} is refused. {FIX}")


@audited("storage.quota.raise")
def raise_storage_quota(*, actor, project: Project, limit_gib: int, ticket: str) -> StorageQuota:
    """Set the project's storage quota, for a support ticket. It covers snapshots and images, so it
    takes the rights to raise both kinds of limit."""
    for perm in (Perm.MANAGE_SNAPSHOT_QUOTAS, Perm.MANAGE_IMAGE_QUOTAS):
        require(actor, perm, project, "raise the storage quota")
    if not ticket.strip():
        raise InvalidRequest("A ticket reference is required to raise a quota.", field="ticket")
    if limit_gib < 1 or limit_gib > MAX_LIMIT_GIB:
        raise InvalidRequest(f"The quota must be between 1 and {MAX_LIMIT_GIB} GiB.", field="limit_gib")
    return StorageQuota.objects.create(
        project=project,
        limit_bytes=limit_gib * GiB,
        ticket=ticket.strip(),
        set_by=actor_name(actor),
    )
