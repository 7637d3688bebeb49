"""What Celery beat starts for snapshots (settings.CELERY_BEAT_SCHEDULE). Beat acts like a user: it
calls the request side, which queues the worker steps (docs/decisions.md, services -> tasks -> work)."""

from __future__ import annotations

from celery import shared_task

from clouddigit.queueing import REPLICATION_QUEUE, enqueue, hypervisor_queue
from snapshots import diagnosis, tasks
from snapshots.models import Snapshot


@shared_task
def measure_all() -> None:
    """Billed size history of every available snapshot (the storage-growth charts read it)."""
    available = Snapshot.objects.filter(state=Snapshot.State.AVAILABLE).values_list("pk", "region")
    for snapshot_id, region in available:
        enqueue(tasks.measure, str(snapshot_id), queue=hypervisor_queue(region))


@shared_task
def sweep() -> None:
    """Mark operations stuck past their deadline, expire safety snapshots."""
    diagnosis.sweep()


@shared_task
def collect_chunks() -> None:
    """Delete copied chunks that no copy has used for the grace period (on the replication queue)."""
    enqueue(tasks.collect_chunks, queue=REPLICATION_QUEUE)
