"""The worker side of images: `process` makes a PROCESSING image (an upload, a promoted snapshot, a
cross-region copy) AVAILABLE, run by its task (`tasks.py`) under the row's claim.

It converts to qcow2, checksums and stores the file in the region's object store, recording each step on
the row. It never imports the request side (`services`): services -> tasks -> work (docs/decisions.md).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone

from clouddigit import operations
from clouddigit.audit.log import Target, record
from clouddigit.audit.models import AuditEntry
from clouddigit.backends import volumes
from clouddigit.backends.objectstore import ObjectStore
from clouddigit.errors import Conflict
from clouddigit.statemachine import TransitionRefused
from images import inspection
from images.errors import ImagePromoteFailed, ImageUploadFailed
from images.files import cache_path, object_store, staging_path
from images.models import Image
from snapshots import chains


def _step(image: Image, text: str) -> None:
    Image.objects.filter(pk=image.pk).update(step=text[:200], updated_at=timezone.now())
    image.step = text[:200]
    operations.checkpoint(text)


def process(image_id: str) -> None:
    """Make a PROCESSING image AVAILABLE: produce its qcow2 file, checksum it, store it. It can run
    again after an interruption: every step starts from scratch files of its own."""
    image = Image.objects.select_related("region", "project").get(pk=image_id)
    if image.source == Image.Source.COPY:
        _copy_object(image)
        return
    staged = staging_path(image)
    staged.unlink(missing_ok=True)
    if image.source == Image.Source.SNAPSHOT:
        _flatten_snapshot(image, staged)
    else:
        _convert_upload(image, staged)
    _store(image, staged)
    image.upload_path.unlink(missing_ok=True)


def _convert_upload(image: Image, staged: Path) -> None:
    # Inspected again: the worker trusts nothing it did not check, and the check reads only headers.
    verdict = inspection.inspect(image.upload_path, image.declared_format)
    if not verdict.safe:
        raise ImageUploadFailed(verdict.reason)
    assert verdict.format is not None  # a safe verdict names the format it checked
    _step(image, f"convert {verdict.format} to qcow2")
    volumes.convert(image.upload_path, inspection.QEMU_FORMAT[verdict.format], staged)


def _flatten_snapshot(image: Image, staged: Path) -> None:
    disks = list(image.source_snapshot.disks.all()) if image.source_snapshot else []
    disk = next((disk for disk in disks if disk.device == image.source_device or len(disks) == 1), None)
    if disk is None or disk.layer is None:
        raise ImagePromoteFailed("the snapshot was deleted before its disk was copied; promote another one.")
    _step(image, f"flatten {disk.volume_name}")
    try:
        with chains.locked(disk.layer, purpose=f"making image {image.name} from a snapshot", shared=True):
            volumes.convert(disk.layer.path, "qcow2", staged)
    except ObjectDoesNotExist:
        raise ImagePromoteFailed(
            "the snapshot was deleted before its disk was copied; promote another one."
        ) from None


def _store(image: Image, path: Path) -> None:
    _step(image, "checksum the guest-visible bytes")
    guest_sha256 = volumes.checksum(path)
    virtual_size = volumes.info(path)["virtual-size"]
    _step(image, f"store in the {image.region_id} object store")
    key = f"images/{image.id}.qcow2"
    store = object_store(image.region)
    sha256 = store.put_file(key, path)
    _verify_stored(store, key, sha256)
    stored_bytes = path.stat().st_size
    operations.checkpoint("stored; keeping the region's copy")
    # The region's copy is in place before the row says Available: boot volumes are copied from it.
    os.replace(path, cache_path(image))
    image.transition(
        Image.State.AVAILABLE,
        object_key=key,
        sha256=sha256,
        guest_sha256=guest_sha256,
        virtual_size=virtual_size,
        stored_bytes=stored_bytes,
        step="",
        last_error="",
    )


def _verify_stored(store: ObjectStore, key: str, sha256: str) -> None:
    stored = store.head(key)
    if stored is None or stored["sha256"] != sha256:
        raise ImageUploadFailed(
            f"the object store holds {stored and stored['sha256']} for {key}, not {sha256}; retry the upload."
        )


def _copy_object(image: Image) -> None:
    source = image.copied_from
    if source is None or source.state != Image.State.AVAILABLE:
        raise Conflict("the source image was deleted before it was copied; copy another one.")
    key = f"images/{image.id}.qcow2"
    _step(image, f"copy from {source.project} ({source.region_id})")
    target, origin = object_store(image.region), object_store(source.region)
    if target.endpoint == origin.endpoint:
        target.copy(source.object_key, key, src_store=origin)
    else:
        with tempfile.TemporaryDirectory(prefix="clouddigit-image-copy-") as scratch:
            local = Path(scratch) / "image.qcow2"
            origin.get_file(source.object_key, local)
            target.put_file(key, local, sha256=source.sha256)
    _verify_stored(target, key, source.sha256)
    image.transition(
        Image.State.AVAILABLE,
        object_key=key,
        sha256=source.sha256,
        guest_sha256=source.guest_sha256,
        stored_bytes=source.stored_bytes,
        step="",
        last_error="",
    )


def fail(image_id: str, message: str) -> None:
    """Record a worker failure on the row; the console shows it and the user may delete the image. An
    image that has left PROCESSING meanwhile (or is gone) is left as it is."""
    image = Image.objects.filter(pk=image_id, state=Image.State.PROCESSING).first()
    if image is None:
        return
    try:
        image.transition(Image.State.FAILED, last_error=message[:2000], step="")
    except TransitionRefused:
        return
    record(
        actor=None,
        action="image.process",
        outcome=AuditEntry.Outcome.FAILED,
        target=Target.of(image),
        message=message,
    )
    image.upload_path.unlink(missing_ok=True)
    staging_path(image).unlink(missing_ok=True)


def give_up(image: Image, reason: str) -> None:
    fail(str(image.pk), f"Gave up: {reason}")
