"""Thin tasks: each runs one worker step (`work.py`) under the row's claim and queues what follows it.

`operations.run` claims the row in the state the step starts from (one conditional UPDATE) and records a
failure on the row so the console can show it. A task that cannot claim its row (finished, in another
state, gone, or another worker's) does nothing: duplicate deliveries and the reconciler's re-queues are
harmless (clouddigit/operations.py).
"""

from __future__ import annotations

from celery import shared_task

from clouddigit.operations import Waiting, run
from clouddigit.queueing import enqueue, hypervisor_queue
from snapshots import replication_work, work
from snapshots.models import Restore, Snapshot


@shared_task(bind=True, max_retries=None)
def take(self, snapshot_id: str) -> None:
    try:
        taken = run(Snapshot, snapshot_id, state=Snapshot.State.CREATING, step=work.take, fail=work.fail)
    except Waiting as waiting:
        raise self.retry(countdown=waiting.seconds, exc=waiting) from None
    if taken is not None:
        enqueue(measure, str(taken.pk), queue=hypervisor_queue(taken.region_id))


@shared_task
def finish_delete(snapshot_id: str) -> None:
    run(Snapshot, snapshot_id, state=Snapshot.State.DELETING, step=work.finish_delete, fail=work.fail)


@shared_task
def finish_rollback(safety_id: str) -> None:
    safety = run(
        Snapshot, safety_id, state=Snapshot.State.CREATING, step=work.finish_rollback, fail=work.fail
    )
    if safety is not None:
        enqueue(measure, str(safety.pk), queue=hypervisor_queue(safety.region_id))


@shared_task
def finish_restore(restore_id: str) -> None:
    run(Restore, restore_id, state=Restore.State.RESTORING, step=work.finish_restore, fail=work.fail_restore)


@shared_task
def measure(snapshot_id: str) -> None:
    work.measure(snapshot_id)


# --- Cross-region copies (snapshots/replication_work.py) ---------------------------------------------


@shared_task
def send_copy(copy_id: str) -> None:
    """Send the chunks and manifests (replication queue), then queue the landing in the target region."""
    copy = run(
        Snapshot,
        copy_id,
        state=Snapshot.State.CREATING,
        step=replication_work.send,
        fail=replication_work.fail,
    )
    if copy is not None:
        enqueue(land_copy, str(copy.pk), queue=hypervisor_queue(copy.region_id))


@shared_task
def land_copy(copy_id: str) -> None:
    run(
        Snapshot,
        copy_id,
        state=Snapshot.State.CREATING,
        step=replication_work.land,
        fail=replication_work.fail,
    )


@shared_task
def collect_chunks() -> None:
    replication_work.collect()
