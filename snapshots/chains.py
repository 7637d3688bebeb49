"""File-level operations on volume chains, each paired with the rows that describe it.

A volume is a qcow2 chain: its active file (`Volume.path`) backs onto sealed layers (`Layer`). Taking a
snapshot seals the active file and gives the volume a new empty overlay (redirect-on-write: metadata
only). Deleting a snapshot merges its layer into every child and removes the file. Each function can
run again after an interruption and finishes the job.
"""

from __future__ import annotations

from pathlib import Path

from django.db import transaction

from clouddigit.backends import volumes
from clouddigit.compute.models import Layer, Volume


def _overlay(path: str, backing: str) -> None:
    """Create the overlay unless a previous attempt already did (with the same backing file)."""
    if Path(path).exists():
        if volumes.info(path).get("full-backing-filename") == str(Path(backing).resolve()):
            return
        Path(path).unlink()
    volumes.create_overlay(path, backing)


def seal_active(volume: Volume, overlay_path: str, *, new_backing: Layer | None = None) -> Layer:
    """Seal the volume's active file as a layer; the volume continues in a new overlay at `overlay_path`,
    on top of the sealed layer (a snapshot) or of `new_backing` (a roll-back to that layer)."""
    sealed = Layer(region_id=volume.region_id, path=volume.path, parent=volume.backing_layer)
    _overlay(overlay_path, (new_backing or sealed).path)
    with transaction.atomic():
        sealed.save()
        volume.path = overlay_path
        volume.backing_layer = new_backing or sealed
        volume.save(update_fields=["path", "backing_layer", "updated_at"])
    return sealed


def new_volume_file(path: str, layer: Layer) -> None:
    """A restored volume's file: an overlay on the snapshot's layer, so restoring costs no copy."""
    _overlay(path, layer.path)


def merge_away(layer: Layer) -> None:
    """Merge `layer` into each child (layers and volume files backing onto it), then delete it.

    Interrupted anywhere, running it again finishes the job: a child already rebased onto the parent
    is rebased again at no cost, and the layer's row goes only after every child has moved off it.
    """
    from snapshots.models import SnapshotDisk

    parent = layer.parent
    for child in [*layer.children.all(), *layer.volumes.all()]:
        volumes.rebase(child.path, parent.path if parent else None)
        if isinstance(child, Layer):
            Layer.objects.filter(pk=child.pk).update(parent=parent)
        else:
            Volume.objects.filter(pk=child.pk).update(backing_layer=parent)
    with transaction.atomic():
        SnapshotDisk.objects.filter(layer=layer).update(layer=None)
        layer.delete()
    Path(layer.path).unlink(missing_ok=True)


def delete_volume_file(path: str) -> None:
    Path(path).unlink(missing_ok=True)
