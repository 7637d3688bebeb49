"""Thin tasks: claim the row, call the service, record a failure on the row so the console can show it.

A task that cannot claim its row (finished, gone, or another worker holds it) does nothing: duplicate
deliveries and the reconciler's re-queues are harmless (clouddigit/operations.py).
"""

from __future__ import annotations

from celery import shared_task

from clouddigit.operations import claimed
from snapshots import diagnosis, services
from snapshots.models import Restore, Snapshot

WAIT_SECONDS = 30


@shared_task(bind=True, max_retries=None)
def take(self, snapshot_id: str) -> None:
    with claimed(Snapshot, snapshot_id) as claim:
        if not claim:
            return
        try:
            services.take(snapshot_id)
        except services.Waiting as waiting:
            claim.waiting(WAIT_SECONDS)
            raise self.retry(countdown=WAIT_SECONDS, exc=waiting) from None
        except Exception as error:
            services.fail(snapshot_id, str(error))
            raise


@shared_task
def finish_delete(snapshot_id: str) -> None:
    with claimed(Snapshot, snapshot_id) as claim:
        if not claim:
            return
        try:
            services.finish_delete(snapshot_id)
        except Exception as error:
            services.fail(snapshot_id, str(error))
            raise


@shared_task
def finish_rollback(safety_id: str) -> None:
    with claimed(Snapshot, safety_id) as claim:
        if not claim:
            return
        try:
            services.finish_rollback(safety_id)
        except Exception as error:
            services.fail(safety_id, str(error))
            raise


@shared_task
def finish_restore(restore_id: str) -> None:
    with claimed(Restore, restore_id) as claim:
        if not claim:
            return
        try:
            services.finish_restore(restore_id)
        except Exception as error:
            services.fail_restore(restore_id, str(error))
            raise


@shared_task
def measure(snapshot_id: str) -> None:
    services.measure(snapshot_id)


@shared_task
def measure_all() -> None:
    """Periodic: billed size history of every available snapshot (the storage-growth charts read it)."""
    services.measure_all()


@shared_task
def sweep() -> None:
    """Periodic: mark operations stuck past their deadline, expire safety snapshots."""
    diagnosis.sweep()
