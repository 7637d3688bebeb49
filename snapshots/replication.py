"""Cross-region snapshot copies, the request side: validate, write the copy's row in the target region's
catalogue (Creating, not restorable) and queue its sending on the replication queue. The worker side is
`replication_work.py`; the design is in docs/decisions.md ("Cross-region snapshot copy").
"""

from __future__ import annotations

from django.utils import timezone

from clouddigit import operations
from clouddigit.access import actor_name, require
from clouddigit.audit.log import audited
from clouddigit.compute.models import Region
from clouddigit.compute.permissions import Perm
from clouddigit.errors import Conflict, InvalidRequest
from clouddigit.names import check_name, shown
from clouddigit.queueing import REPLICATION_QUEUE, enqueue, hypervisor_queue
from images import storage
from snapshots import replication_work, tasks
from snapshots.models import Snapshot, SnapshotDisk


def _region(slug: str, field: str) -> Region:
    region = Region.objects.filter(slug=(slug or "").strip()).first()
    if region is None:
        known = ", ".join(Region.objects.order_by("slug").values_list("slug", flat=True))
        raise InvalidRequest(f"Unknown region {shown(slug or '')}; the regions are: {known}.", field=field)
    return region


@audited("snapshot.copy", target="snapshot")
def copy_snapshot(
    *, actor, snapshot: Snapshot, target_region: str, source_region: str = "", name: str = ""
) -> Snapshot:
    """Copy an available snapshot into another region's catalogue (same project). Returns the copy."""
    require(actor, Perm.CREATE_SNAPSHOTS, snapshot.project, "copy snapshots")
    if source_region and source_region != snapshot.region_id:
        _region(source_region, "source_region")
        raise InvalidRequest(
            f"Snapshot {snapshot} is in {snapshot.region_id}, not {source_region}: name its region as the "
            "source region.",
            field="source_region",
        )
    target = _region(target_region, "target_region")
    if target.pk == snapshot.region_id:
        raise InvalidRequest(
            f"Snapshot {snapshot} is already in {target.pk}: choose another region as the target.",
            field="target_region",
        )
    if snapshot.state != Snapshot.State.AVAILABLE:
        raise Conflict(f"Snapshot {snapshot} is {snapshot.state}; only an available snapshot can be copied.")
    name = check_name(name) if name else snapshot.name
    storage.check_not_full(project=snapshot.project, what="a snapshot copy")
    copy = Snapshot.objects.create(
        project=snapshot.project,
        region=target,
        name=name,
        kind=snapshot.kind,
        vm_name=snapshot.vm_name,
        vm_definition=snapshot.vm_definition,
        origin=Snapshot.Origin.MANUAL,
        consistency_requested=snapshot.consistency_requested,
        consistency_achieved=snapshot.consistency_achieved,
        consistency_reason=snapshot.consistency_reason,
        tags=snapshot.tags,
        source_snapshot=snapshot,
        source_region_id=snapshot.region_id,
        step="queued for the replication worker",
        step_started_at=timezone.now(),
        created_by=actor_name(actor),
        **operations.queued(),
    )
    for disk in snapshot.disks.all():
        SnapshotDisk.objects.create(
            snapshot=copy,
            volume_name=disk.volume_name,
            device=disk.device,
            bootable=disk.bootable,
            size_bytes=disk.size_bytes,
            checksum=disk.checksum,
        )
    enqueue(tasks.send_copy, str(copy.pk), queue=REPLICATION_QUEUE)
    return copy


def resume(copy: Snapshot) -> None:
    """The copy's next step: sending until every manifest is written, then landing."""
    if replication_work.manifests_written(copy):
        enqueue(tasks.land_copy, str(copy.pk), queue=hypervisor_queue(copy.region_id))
    else:
        enqueue(tasks.send_copy, str(copy.pk), queue=REPLICATION_QUEUE)


def copying(snapshot: Snapshot) -> Snapshot | None:
    """A copy of `snapshot` that is reading it now (the source is held until it lands or fails)."""
    return snapshot.copies.filter(state=Snapshot.State.CREATING).select_related("region").first()


def progress(copy: Snapshot) -> dict:
    """Bytes done / total, the rate since the copy started and the time left at that rate."""
    elapsed = max(((copy.completed_at or timezone.now()) - copy.created_at).total_seconds(), 0.001)
    rate = copy.bytes_done / elapsed
    left = max(copy.bytes_total - copy.bytes_done, 0)
    return {
        "percent": 100
        if copy.state == Snapshot.State.AVAILABLE
        else int(100 * copy.bytes_done / copy.bytes_total)
        if copy.bytes_total
        else 0,
        "rate": rate,
        "eta_seconds": int(left / rate) if rate > 0 and copy.state == Snapshot.State.CREATING else None,
    }
