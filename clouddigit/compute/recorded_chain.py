"""A volume's qcow2 backing chain, recorded on the Volume by whoever changes it and shown by its page.

Reading a chain runs qemu-img, which has no place in a web request: a busy disk or a long chain would
hold the page. Creating a volume (clouddigit.compute.services) and every change to a chain's files
(snapshots.chains: taking, deleting, rolling back to and restoring a snapshot) record it here; the
page shows that record and when it was made. Allocated sizes grow with every guest write after that.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.utils import timezone

from clouddigit.backends import volumes
from clouddigit.compute.models import Volume

log = logging.getLogger(__name__)


def record(volume: Volume) -> None:
    """Read the volume's chain now and store it. A file that cannot be read keeps its last record (and
    is logged): the operation that changed the chain has already succeeded."""
    try:
        # force_share: a running VM's qemu holds the active file; a moving view is fine for a record.
        layers = volumes.backing_chain(volume.path, force_share=True)
    except volumes.VolumeError as error:
        log.warning("could not record the backing chain of volume %s: %s", volume.pk, error)
        return
    # File names only: where the host keeps them is not the tenant's business (CONVENTIONS.md).
    chain = [
        {
            "file": Path(layer["filename"]).name,
            "virtual_size": layer.get("virtual-size"),
            "actual_size": layer.get("actual-size"),
            "backing": Path(layer["backing-filename"]).name if layer.get("backing-filename") else "",
        }
        for layer in layers
    ]
    recorded_at = timezone.now()
    Volume.objects.filter(pk=volume.pk).update(backing_chain=chain, chain_recorded_at=recorded_at)
    volume.backing_chain, volume.chain_recorded_at = chain, recorded_at


def record_file(path: str) -> None:
    """`record` for the volume whose active file is `path` (if a volume still writes to it)."""
    for volume in Volume.objects.filter(path=path):
        record(volume)
