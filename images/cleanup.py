"""The scheduled sweep of what image operations leave behind when they die instead of failing (a killed
worker, a browser that never finished sending): scratch files nothing in flight owns, uploads nobody
finished, and multipart uploads still open in a region's bucket.

A failure that is caught removes its own scratch (`processing.fail`); this sweep is for the rest. Only what
is older than `IMAGE_SCRATCH_MAX_AGE_HOURS` is judged, so a file being written or an upload being sent
right now is never touched.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from clouddigit.audit.log import Target, record
from clouddigit.audit.models import AuditEntry
from clouddigit.backends.objectstore import ObjectStoreError
from clouddigit.compute.models import Region
from images.files import object_store
from images.models import Image

log = logging.getLogger(__name__)

IN_FLIGHT = (Image.State.UPLOADING, Image.State.PROCESSING)
# Scratch names: `<id>.upload` in var/uploads; `<id>.staging.qcow2` (a conversion) and `<id>.qcow2.part`
# (a download) in each region's image folder. The region's `<id>.qcow2` copies are not scratch.
UPLOAD_SUFFIX = ".upload"
REGION_SCRATCH_SUFFIXES = (".staging.qcow2", ".qcow2.part")


def max_age() -> timedelta:
    return timedelta(hours=settings.IMAGE_SCRATCH_MAX_AGE_HOURS)


def sweep(now: datetime | None = None) -> None:
    cutoff = (now or timezone.now()) - max_age()
    _fail_stalled_uploads(cutoff)
    in_flight = {str(pk) for pk in Image.objects.filter(state__in=IN_FLIGHT).values_list("pk", flat=True)}
    _remove_old_scratch(Path(settings.VAR_DIR) / "uploads", (UPLOAD_SUFFIX,), in_flight, cutoff)
    for region in Region.objects.all():
        folder = Path(region.volume_dir) / "images"
        _remove_old_scratch(folder, REGION_SCRATCH_SUFFIXES, in_flight, cutoff)
        _abort_old_multipart_uploads(region, cutoff)


def _last_activity(image: Image) -> datetime:
    """The row's last change, or the last byte written to its upload file if that is later."""
    path = image.upload_path
    if not path.exists():
        return image.updated_at
    written = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.get_current_timezone())
    return max(image.updated_at, written)


def _fail_stalled_uploads(cutoff: datetime) -> None:
    hours = settings.IMAGE_SCRATCH_MAX_AGE_HOURS
    for image in Image.objects.filter(state=Image.State.UPLOADING, updated_at__lt=cutoff):
        if _last_activity(image) >= cutoff:
            continue
        message = (
            f"ImageUploadFailed: no bytes arrived for {hours} hours, so the upload was given up; "
            "upload the file again (the name is free for it)."
        )
        if Image.objects.filter(pk=image.pk, state=Image.State.UPLOADING).update(
            state=Image.State.FAILED, last_error=message, step="", updated_at=timezone.now()
        ):
            image.upload_path.unlink(missing_ok=True)
            record(
                actor=None,
                action="image.import.upload",
                outcome=AuditEntry.Outcome.FAILED,
                target=Target.of(image),
                message=message,
            )


def _image_id(name: str, suffixes: tuple[str, ...]) -> str | None:
    for suffix in suffixes:
        if name.endswith(suffix):
            try:
                return str(uuid.UUID(name.removesuffix(suffix)))
            except ValueError:
                return None
    return None


def _remove_old_scratch(
    folder: Path, suffixes: tuple[str, ...], in_flight: set[str], cutoff: datetime
) -> None:
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        image_id = _image_id(path.name, suffixes)
        if image_id is None or image_id in in_flight:
            continue
        try:
            modified = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.get_current_timezone())
            if modified < cutoff:
                path.unlink()
                log.info("removed scratch file %s of image %s (no operation owns it)", path, image_id)
        except FileNotFoundError:  # removed meanwhile by the operation itself
            continue


def _abort_old_multipart_uploads(region: Region, cutoff: datetime) -> None:
    try:
        aborted = object_store(region).abort_incomplete_uploads(started_before=cutoff, prefix="images/")
    except ObjectStoreError as error:  # one region's store being down must not stop the others' sweep
        log.warning("could not sweep multipart uploads in %s: %s", region, error)
        return
    for key in aborted:
        log.info("aborted a multipart upload of %s in %s left by a process that died", key, region)
