"""Snapshots hold their volume's data: what deleting a volume asks of them (`clouddigit.compute.hooks`,
registered in `SnapshotsConfig.ready()`)."""

from __future__ import annotations

from clouddigit.compute.hooks import Holding
from clouddigit.compute.models import Volume
from snapshots.models import Snapshot
from snapshots.services import delete_snapshot, deleted_with_volume, snapshots_of_volume


def holding(volume: Volume) -> Holding | None:
    """The volume's snapshots, if it has any, as its delete form and refusals name them."""
    held = list(snapshots_of_volume(volume))
    if not held:
        return None
    kept = deleted_with_volume(held)[1]
    busy = [snapshot.name for snapshot in held if snapshot.state != Snapshot.State.AVAILABLE]
    return Holding(
        counted=f"{len(held)} snapshot{'s' if len(held) != 1 else ''}",
        names=[snapshot.name for snapshot in held],
        if_kept="they still restore to new volumes",
        kept_either_way=(
            f"VM snapshots that also hold other volumes ({len(kept)}) are kept either way." if kept else ""
        ),
        busy=(
            f"Snapshot {', '.join(busy)} of volume {volume.name} is being created or deleted: delete the "
            "volume once it has finished."
            if busy
            else ""
        ),
    )


def delete_with(actor, volume: Volume) -> None:
    """Delete the snapshots that hold only this volume; a VM snapshot that also holds other volumes is
    kept (it is their point in time too). Each goes through `delete_snapshot`, permission check included."""
    for snapshot in deleted_with_volume(snapshots_of_volume(volume))[0]:
        delete_snapshot(actor=actor, snapshot=snapshot, confirm=snapshot.name)
