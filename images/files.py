"""Where an image's bytes live: its region's object store (the truth), the region's local copy that boot
volumes are copied from, and the scratch file a worker converts into."""

from __future__ import annotations

from pathlib import Path

from clouddigit.backends.objectstore import ObjectStore
from clouddigit.compute.models import Region
from clouddigit.errors import Conflict
from images.models import Image


def object_store(region: Region) -> ObjectStore:
    return ObjectStore.for_region(region.config)


def cache_path(image: Image) -> Path:
    """The region's local copy of an image's qcow2 file, which boot volumes are copied from."""
    return Path(image.region.volume_dir) / "images" / f"{image.id}.qcow2"


def staging_path(image: Image) -> Path:
    return Path(image.region.volume_dir) / "images" / f"{image.id}.staging.qcow2"


def local_file(image: Image) -> Path:
    """The image's qcow2 file in its region, fetched from the object store (and its SHA-256 checked
    against the row) when this region has no copy yet."""
    path = cache_path(image)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fetched = object_store(image.region).get_file(image.object_key, path)
        if fetched != image.sha256:
            path.unlink(missing_ok=True)
            raise Conflict(
                f"Image {image.name}'s stored bytes have SHA-256 {fetched}, not the recorded {image.sha256}; "
                "it cannot be used. Upload it again or ask support."
            )
    return path
