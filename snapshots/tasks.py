"""Thin tasks: load by id, call the service, record a failure on the row so the console can show it."""

from __future__ import annotations

from celery import shared_task

from snapshots import diagnosis, services

WAIT_SECONDS = 30


@shared_task(bind=True, max_retries=None)
def take(self, snapshot_id: str) -> None:
    try:
        services.take(snapshot_id)
    except services.Waiting as waiting:
        raise self.retry(countdown=WAIT_SECONDS, exc=waiting) from None
    except Exception as error:
        services.fail(snapshot_id, str(error))
        raise


@shared_task
def finish_delete(snapshot_id: str) -> None:
    try:
        services.finish_delete(snapshot_id)
    except Exception as error:
        services.fail(snapshot_id, str(error))
        raise


@shared_task
def finish_rollback(safety_id: str) -> None:
    try:
        services.finish_rollback(safety_id)
    except Exception as error:
        services.fail(safety_id, str(error))
        raise


@shared_task
def finish_restore(restore_id: str) -> None:
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
