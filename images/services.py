"""Every image operation. Console views, API views and the CLI (through the API) call these.

An import is two requests and a task: `start_import` writes the row (UPLOADING), `receive_upload`
streams the bytes to disk and runs the header inspection before any tool opens them, and the worker
(`processing.process`, queued through `tasks.py`) converts to qcow2, checksums and stores the file in the
region's object store. Promotion and cross-region copy write a PROCESSING row and use the same worker.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from clouddigit import operations
from clouddigit.access import actor_name, require
from clouddigit.audit.log import Target, audited, record
from clouddigit.audit.models import AuditEntry
from clouddigit.compute.models import Project, Region
from clouddigit.compute.permissions import Perm
from clouddigit.compute.services import check_tags
from clouddigit.errors import Conflict, InvalidRequest
from clouddigit.names import check_name
from clouddigit.queueing import enqueue, hypervisor_queue
from images import inspection, storage, tasks
from images.errors import ImagePromoteFailed, ImageQuotaExceeded, ImageUploadFailed
from images.files import cache_path, object_store, staging_path
from images.models import DEFAULT_CUSTOM_IMAGES_PER_PROJECT, Image, ImageQuota, ImageShare
from snapshots.models import Snapshot

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
MiB = 2**20


# --- Quota ------------------------------------------------------------------------------------------


def image_limit(project: Project) -> int:
    raised = ImageQuota.objects.filter(project=project).first()
    return raised.limit if raised else DEFAULT_CUSTOM_IMAGES_PER_PROJECT


def _check_quota(project: Project) -> None:
    limit, used = image_limit(project), Image.objects.counting_against_quota(project).count()
    if used >= limit:
        raise ImageQuotaExceeded(
            f"Project {project} has {used} custom images (limit {limit}). Delete images you no longer "
            "need, or ask an account admin to raise the limit with a ticket reference."
        )


@audited("image.quota.raise")
def raise_image_limit(*, actor, project: Project, limit: int, ticket: str) -> ImageQuota:
    require(actor, Perm.MANAGE_IMAGE_QUOTAS, project, "raise the custom-image limit")
    if not ticket.strip():
        raise InvalidRequest("A ticket reference is required to raise a limit.", field="ticket")
    if limit < 1 or limit > 10_000:
        raise InvalidRequest("The limit must be between 1 and 10000.", field="limit")
    return ImageQuota.objects.create(
        project=project, limit=limit, ticket=ticket.strip(), set_by=actor_name(actor)
    )


# --- Create: upload, promote, copy -------------------------------------------------------------------


def _checklist_tags(tags: dict | None, actor) -> dict:
    """The publisher's tags, with `created-at` set by us and `owner` defaulting to the publisher."""
    tags = check_tags(tags)
    tags.setdefault("owner", actor_name(actor))
    tags["created-at"] = timezone.now().strftime("%Y-%m-%d")
    return tags


def _new_image(*, actor, project: Project, region: Region, name: str, **fields) -> Image:
    """Insert a custom image row, replacing a failed one of the same name (its name is free again)."""
    name = check_name(name)
    _check_quota(project)
    for failed in Image.objects.filter(project=project, region=region, name=name, state=Image.State.FAILED):
        _remove_files(failed)
        failed.delete()
    try:
        with transaction.atomic():
            return Image.objects.create(
                project=project, region=region, name=name, created_by=actor_name(actor), **fields
            )
    except IntegrityError:
        raise Conflict(
            f"An image named {name!r} already exists in {project} ({region}).", field="name"
        ) from None


def max_upload_bytes() -> int:
    return settings.IMAGE_MAX_UPLOAD_BYTES


def _too_large(size: int) -> ImageUploadFailed:
    return ImageUploadFailed(
        f"the file is {size / 2**30:.1f} GiB; uploads are limited to {max_upload_bytes() / 2**30:.0f} GiB. "
        "Shrink the image (qemu-img convert -O qcow2 drops unused space) or build it with Packer instead.",
        field="file",
    )


@audited("image.import.start")
def start_import(
    *,
    actor,
    project: Project,
    region: Region,
    name: str,
    declared_format: str,
    size_bytes: int | None = None,
    description: str = "",
    tags: dict | None = None,
) -> Image:
    """A custom image waiting for its bytes (`receive_upload`)."""
    require(actor, Perm.PUBLISH_IMAGES, project, "upload images")
    if declared_format not in inspection.FORMATS:
        raise ImageUploadFailed(
            f"format {declared_format!r} is not accepted; upload one of {', '.join(inspection.FORMATS)}.",
            field="format",
        )
    if size_bytes is not None and size_bytes > max_upload_bytes():
        raise _too_large(size_bytes)
    return _new_image(
        actor=actor,
        project=project,
        region=region,
        name=name,
        description=description[:300],
        declared_format=declared_format,
        tags=_checklist_tags(tags, actor),
        source=Image.Source.UPLOAD,
    )


def publish_platform_image(
    *,
    slot: str,
    region: Region,
    name: str,
    path: Path,
    declared_format: str,
    description: str = "",
    tags: dict | None = None,
    openscap_score: float | None = None,
) -> Image:
    """A stock or hardened image, published by an operator (`manage.py publish_image`) through the same
    inspection and storage as a tenant's upload. Every project of the region may boot from it."""
    if slot not in (Image.Slot.STOCK, Image.Slot.HARDENED):
        raise InvalidRequest("Platform images go in the stock or hardened slot.", field="slot")
    if declared_format not in inspection.FORMATS:
        raise ImageUploadFailed(f"format {declared_format!r} is not accepted.", field="format")
    try:
        image = Image.objects.create(
            slot=slot,
            region=region,
            name=check_name(name),
            description=description[:300],
            declared_format=declared_format,
            tags=_checklist_tags({"owner": "cloud-digit", **(tags or {})}, None),
            openscap_score=openscap_score,
            source=Image.Source.PLATFORM,
            created_by="system",
        )
    except IntegrityError:
        raise Conflict(f"A platform image named {name!r} already exists in {region}.", field="name") from None
    with path.open("rb") as stream:
        return receive_upload(actor=None, image=image, stream=stream, length=path.stat().st_size)


def receive_upload(*, actor, image: Image, stream: BinaryIO, length: int | None = None) -> Image:
    """Write the uploaded bytes to disk a chunk at a time, then inspect their headers.

    Refused files leave a FAILED image that says why (the name is reused by the next upload); accepted
    ones go to the region's worker to be converted and stored.
    """
    require(actor, Perm.PUBLISH_IMAGES, image.project, f"upload to image {image.name}")
    if image.state != Image.State.UPLOADING:
        raise Conflict(f"Image {image.name} is {image.get_state_display().lower()}; it takes no upload now.")
    try:
        received = _write_upload(image, stream, length)
        verdict = inspection.inspect(image.upload_path, image.declared_format)
        if not verdict.safe:
            raise ImageUploadFailed(verdict.reason, field="file")
        if verdict.virtual_size is not None and verdict.virtual_size > settings.IMAGE_MAX_VIRTUAL_BYTES:
            raise ImageUploadFailed(
                f"the image's disk is {verdict.virtual_size / 2**40:.1f} TiB; images may be at most "
                f"{settings.IMAGE_MAX_VIRTUAL_BYTES / 2**40:g} TiB. Shrink the disk before uploading.",
                field="file",
            )
        _check_storage(image.project, image.name, verdict.virtual_size or received, field="file")
    except (ImageUploadFailed, storage.StorageQuotaExceeded) as error:
        image.upload_path.unlink(missing_ok=True)
        image.transition(Image.State.FAILED, last_error=str(error), step="")
        record(
            actor=actor,
            action="image.import.upload",
            outcome=AuditEntry.Outcome.REFUSED,
            target=Target.of(image),
            message=str(error),
        )
        error.audited = True
        raise
    with transaction.atomic():
        image.transition(
            Image.State.PROCESSING,
            detected_format=verdict.format,
            virtual_size=verdict.virtual_size,
            upload_bytes=received,
            step="queued: convert to qcow2, checksum and store",
            **operations.queued(),
        )
        record(
            actor=actor,
            action="image.import.upload",
            target=Target.of(image),
            detail={"bytes": received, "format": verdict.format},
        )
        enqueue(tasks.process, str(image.id), queue=hypervisor_queue(image.region_id))
    return image


def _check_storage(project: Project | None, name: str, size: int, field: str | None = None) -> None:
    """Refuse an image that could take its project past the storage quota, before anything converts or
    copies it (see images.storage: an image in flight counts what it may store)."""
    if project is not None:
        what = f"Image {name} ({storage.size_text(size)})"
        storage.check_room(project=project, adding=size, what=what, field=field)


def _write_upload(image: Image, stream: BinaryIO, length: int | None) -> int:
    limit = max_upload_bytes()
    if length is not None and length > limit:
        raise _too_large(length)
    path = image.upload_path
    path.parent.mkdir(parents=True, exist_ok=True)
    received = 0
    try:
        with path.open("wb") as out:
            while chunk := stream.read(CHUNK_BYTES):
                received += len(chunk)
                if received > limit:
                    raise _too_large(received)
                out.write(chunk)
                if received % (64 * MiB) < len(chunk):
                    Image.objects.filter(pk=image.pk).update(upload_bytes=received)
    except BaseException:  # a client gone mid-way too: the part received is of no use, the next PUT restarts
        path.unlink(missing_ok=True)
        raise
    if received == 0:
        raise ImageUploadFailed("the upload was empty; choose the image file again.", field="file")
    if length is not None and received != length:
        raise ImageUploadFailed(
            f"the upload stopped after {received} of {length} bytes; upload the file again.", field="file"
        )
    return received


def promote_role_hint(actor) -> str:
    """What to add to "no such snapshot" for a publisher who sees no snapshots where they publish: the
    role they lack (said whether or not the snapshot exists, so it reveals nothing)."""
    publishes = Project.objects.visible_to(actor, Perm.PUBLISH_IMAGES)
    blind = publishes.exclude(pk__in=Project.objects.visible_to(actor, Perm.VIEW_SNAPSHOTS).values("pk"))
    if not blind.exists():
        return ""
    return (
        " Promoting also needs a role that sees the project's snapshots (snapshot.viewer or above) "
        f"in {', '.join(str(project) for project in blind.select_related('account')[:5])}: "
        "ask an account admin."
    )


@audited("image.promote")
def promote_snapshot(
    *,
    actor,
    snapshot,
    name: str,
    device: str = "",
    description: str = "",
    tags: dict | None = None,
) -> Image:
    """A custom image from one disk of a snapshot: a volume snapshot, or (with `device`) one disk of a
    VM snapshot. The image is the disk's flattened point-in-time view."""
    require(actor, Perm.PUBLISH_IMAGES, snapshot.project, "promote snapshots to images")
    require(actor, Perm.VIEW_SNAPSHOTS, snapshot.project, "promote snapshots to images")
    if snapshot.state != Snapshot.State.AVAILABLE:
        raise ImagePromoteFailed(
            f"snapshot {snapshot.name} is {snapshot.get_state_display().lower()}; wait until it is "
            "Available, then promote it."
        )
    disks = list(snapshot.disks.all())
    if device:
        disks = [disk for disk in disks if disk.device == device]
        if not disks:
            raise InvalidRequest(f"Snapshot {snapshot.name} has no disk {device}.", field="device")
    if len(disks) > 1:
        boot = next((disk for disk in disks if disk.bootable), disks[0])
        raise ImagePromoteFailed(
            "snapshot has multiple volumes attached "
            f"({', '.join(disk.device or disk.volume_name for disk in disks)}). Only single-volume snapshots "
            f"can be promoted: promote the boot-volume disk {boot.device} alone (--device {boot.device}), "
            "then re-attach the data volumes with cloud-init or a post-boot script."
        )
    disk = disks[0]
    _check_storage(snapshot.project, name, disk.size_bytes)
    image = _new_image(
        actor=actor,
        project=snapshot.project,
        region=snapshot.region,
        name=name,
        description=description[:300] or f"Promoted from snapshot {snapshot.name} ({disk.volume_name})",
        tags=_checklist_tags(tags, actor),
        source=Image.Source.SNAPSHOT,
        source_snapshot=snapshot,
        source_device=disk.device,
        detected_format="qcow2",
        virtual_size=disk.size_bytes,
        state=Image.State.PROCESSING,
        step=f"queued: flatten {disk.volume_name} of snapshot {snapshot.name}",
        **operations.queued(),
    )
    resume(image)
    return image


@audited("image.copy", target="image")
def copy_image(
    *, actor, image: Image, region: Region | None = None, project: Project | None = None, name: str = ""
) -> Image:
    """The same image in another region (images are regional) and/or another project of the same
    account (the spec's other fix for an image missing from the picker). The copy is the copier's: it
    starts project-visible and unshared."""
    if image.project is None:
        raise InvalidRequest("Stock and hardened images are published in every region and project already.")
    region, project = region or image.region, project or image.project
    if project.account_id != image.project.account_id:
        raise cross_account_refused(project.account.slug, image.project.account)
    require(actor, Perm.VIEW_IMAGES, image.project, "copy images")
    require(actor, Perm.PUBLISH_IMAGES, project, "copy images into it")
    if image.state != Image.State.AVAILABLE:
        raise Conflict(
            f"Image {image.name} is {image.get_state_display().lower()}; copy it once it is Available."
        )
    if region.pk == image.region_id and project.pk == image.project_id:
        raise InvalidRequest(
            f"Image {image.name} is already in {project} ({region}); pick another region or project.",
            field="region",
        )
    _check_storage(project, name or image.name, image.stored_bytes or 0)
    copy = _new_image(
        actor=actor,
        project=project,
        region=region,
        name=name or image.name,
        description=image.description,
        tags=dict(image.tags),
        source=Image.Source.COPY,
        copied_from=image,
        detected_format="qcow2",
        declared_format=image.declared_format,
        virtual_size=image.virtual_size,
        state=Image.State.PROCESSING,
        step=f"queued: copy from {image.project} ({image.region_id})",
        **operations.queued(),
    )
    resume(copy)
    return copy


def resume(image: Image) -> None:
    """Queue the worker step of a PROCESSING image (a copy runs on the replication queue)."""
    queue = "replication" if image.source == Image.Source.COPY else hypervisor_queue(image.region_id)
    enqueue(tasks.process, str(image.id), queue=queue)


@audited("image.retry", target="image")
def retry_image(*, actor, image: Image) -> Image:
    """Process a failed or interrupted import, promotion or copy again, from its start."""
    _require_own(actor, image, Perm.PUBLISH_IMAGES, f"retry image {image.name}")
    if image.worker_on_it:
        raise Conflict(
            f"Image {image.name} is being processed now ({image.step}); retry it if it stops making progress."
        )
    if image.state == Image.State.FAILED:
        if image.source == Image.Source.UPLOAD and not image.upload_path.exists():
            raise Conflict(
                f"Image {image.name}'s upload is gone with its failure; upload the file again under the "
                "same name (the failed image is replaced)."
            )
        # A failed image counts nothing against the storage quota; processing it again reserves again.
        reserve = image.copied_from.stored_bytes if image.copied_from else image.virtual_size
        _check_storage(image.project, image.name, reserve or 0)
        image.transition(Image.State.PROCESSING, last_error="", step="queued again", **operations.restarted())
    elif image.state == Image.State.PROCESSING:
        Image.objects.filter(pk=image.pk).update(**operations.restarted())
    else:
        raise Conflict(
            f"Image {image.name} is {image.get_state_display().lower()}: there is nothing to retry."
        )
    resume(image)
    return image


# --- Change: tags, visibility, sharing, deprecation, delete -----------------------------------------


def _require_own(actor, image: Image, perm: Perm, doing: str) -> Project:
    """The image's project, where `actor` holds `perm`; stock and hardened images are refused."""
    if image.project is None:
        raise InvalidRequest("Stock and hardened images are managed by Cloud Digit.")
    require(actor, perm, image.project, doing)
    return image.project


@audited("image.tag", target="image")
def set_tags(*, actor, image: Image, tags: dict) -> Image:
    _require_own(actor, image, Perm.PUBLISH_IMAGES, f"tag image {image.name}")
    tags = check_tags(tags)
    tags["created-at"] = image.tags.get("created-at") or image.created_at.strftime("%Y-%m-%d")
    image.tags = tags
    image.save(update_fields=["tags", "updated_at"])
    return image


@audited("image.visibility", target="image")
def set_visibility(*, actor, image: Image, visibility: str) -> Image:
    if visibility not in Image.Visibility.values:
        raise InvalidRequest(
            f"Visibility must be one of {', '.join(Image.Visibility.values)}.", field="visibility"
        )
    _require_own(actor, image, Perm.SHARE_IMAGES, f"change who can use image {image.name}")
    image.visibility = visibility
    image.save(update_fields=["visibility", "updated_at"])
    return image


def sibling_project(image: Image, reference: str) -> Project:
    """A project of the image's own account, named `account/project` or by id. Another account's
    projects are never looked up: naming one is refused as not yet supported."""
    if image.project is None:
        raise InvalidRequest("Stock and hardened images are available to every project already.")
    home = image.project.account
    account_slug, sep, _ = reference.partition("/")
    if sep and account_slug != home.slug:
        raise cross_account_refused(account_slug, home)
    project = Project.objects.filter(account=home).by_reference(reference).select_related("account").first()
    if project is None:
        raise InvalidRequest(f"There is no project {reference!r} in {home}.", field="project")
    return project


def cross_account_refused(account_slug: str, home) -> InvalidRequest:
    return InvalidRequest(
        f"Sharing with another account ({account_slug}) is not yet supported: cross-account sharing is on "
        f"the roadmap. Share the image with a project of {home} instead.",
        code="NotYetSupported",
        field="project",
    )


@audited("image.share", target="image")
def share_image(*, actor, image: Image, project: Project) -> ImageShare:
    home = _require_own(actor, image, Perm.SHARE_IMAGES, f"share image {image.name}")
    if project.account_id != home.account_id:
        raise cross_account_refused(project.account.slug, home.account)
    if project.pk == image.project_id:
        raise InvalidRequest(f"Image {image.name} already belongs to {project}.", field="project")
    share, _ = ImageShare.objects.get_or_create(
        image=image, project=project, defaults={"shared_by": actor_name(actor)}
    )
    return share


@audited("image.unshare", target="image")
def unshare_image(*, actor, image: Image, project: Project) -> None:
    _require_own(actor, image, Perm.SHARE_IMAGES, f"stop sharing image {image.name}")
    ImageShare.objects.filter(image=image, project=project).delete()


@audited("image.deprecate", target="image")
def deprecate_image(*, actor, image: Image, at: datetime | None = None, note: str = "") -> Image:
    """Hide the image from the VM-create picker from `at` on (now by default); VMs keep running."""
    _require_own(actor, image, Perm.PUBLISH_IMAGES, f"deprecate image {image.name}")
    image.deprecated_at = at or timezone.now()
    image.deprecation_note = note[:300]
    image.save(update_fields=["deprecated_at", "deprecation_note", "updated_at"])
    return image


@audited("image.undeprecate", target="image")
def undeprecate_image(*, actor, image: Image) -> Image:
    _require_own(actor, image, Perm.PUBLISH_IMAGES, f"un-deprecate image {image.name}")
    image.deprecated_at = None
    image.deprecation_note = ""
    image.save(update_fields=["deprecated_at", "deprecation_note", "updated_at"])
    return image


@audited("image.delete", target="image")
def delete_image(*, actor, image: Image) -> None:
    """Remove the image from the catalogue and its bytes from the object store. VMs already created
    from it keep their own copy of its bytes."""
    _require_own(actor, image, Perm.PUBLISH_IMAGES, f"delete image {image.name}")
    # Conditional: a worker that claims it from now on finds no row; one already on it keeps it.
    live = Q(claimed_by__gt="", lease_until__gte=timezone.now())
    if not Image.objects.filter(pk=image.pk).exclude(live).delete()[0]:
        raise Conflict(
            f"Image {image.name} is being processed now ({image.step}); delete it once it is done or failed."
        )
    if image.object_key or image.detected_format:
        # An interrupted worker may have stored the object under its key before the row recorded it.
        object_store(image.region).delete(image.object_key or f"images/{image.id}.qcow2")
    _remove_files(image)


def _remove_files(image: Image) -> None:
    image.upload_path.unlink(missing_ok=True)
    cache_path(image).unlink(missing_ok=True)
    staging_path(image).unlink(missing_ok=True)
