"""Operations whose task was lost (its worker killed, its message gone) are resumed by their owner's Retry
or by the reconciler, with the step that fits what the row is."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from clouddigit import operations
from clouddigit.backends import volumes
from clouddigit.compute.models import Volume
from clouddigit.errors import Conflict
from snapshots import diagnosis, services, tasks, work
from snapshots.models import Restore, Snapshot

MiB = 2**20


def test_retrying_an_interrupted_rollback_finishes_the_rollback(run, operator, snap_admin, data_volume):
    target = run(services.create_snapshot, actor=operator, volume=data_volume, name="before")
    wanted = target.disks.get().checksum
    data_volume.refresh_from_db()
    volumes.write_pattern(data_volume.path, 0, MiB, 0x5A)  # the data the roll-back replaces
    replaced = volumes.checksum(data_volume.path)

    # The roll-back's task is lost (not run): the safety snapshot stays creating.
    safety = services.rollback(actor=snap_admin, snapshot=target, confirm="data-01")
    assert Snapshot.objects.get(pk=safety.pk).state == Snapshot.State.CREATING

    run(services.retry, actor=operator, snapshot=Snapshot.objects.get(pk=safety.pk))
    safety.refresh_from_db()
    assert safety.state == Snapshot.State.AVAILABLE
    live = Volume.objects.get(pk=data_volume.pk)
    assert volumes.checksum(live.path) == wanted, "Content mismatch: the volume was not rolled back"
    assert volumes.checksum(safety.disks.get().layer.path) == replaced


def _lapse(row) -> None:
    """The lease runs out: the worker holding the row died (or its message was lost)."""
    type(row).objects.filter(pk=row.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    row.refresh_from_db()


def test_a_lost_create_is_explained_as_lost_and_the_reconciler_completes_it(run, operator, data_volume):
    snapshot = services.create_snapshot(actor=operator, volume=data_volume)  # its task is lost
    before = volumes.checksum(data_volume.path)
    Snapshot.objects.filter(pk=snapshot.pk).update(
        claimed_by="worker-1:4242", step_started_at=timezone.now() - timedelta(minutes=6)
    )
    _lapse(snapshot)
    [finding] = diagnosis.diagnose(snapshot)
    assert finding.cause.startswith("The task was lost") and "worker-1:4242" in finding.detail
    assert "Backend slow" not in finding.cause
    diagnosis.sweep()
    assert Snapshot.objects.get(pk=snapshot.pk).stuck_reason.startswith("Stuck: The task was lost")

    assert run(operations.reconcile) == 1
    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.AVAILABLE and snapshot.attempts == 1
    assert volumes.checksum(snapshot.disks.get().layer.path) == before
    assert operations.reconcile() == 0  # nothing left to do


def test_the_reconciler_finishes_a_lost_rollback_and_a_lost_restore(run, operator, snap_admin, data_volume):
    target = run(services.create_snapshot, actor=operator, volume=data_volume, name="before")
    wanted = target.disks.get().checksum
    data_volume.refresh_from_db()
    volumes.write_pattern(data_volume.path, 0, MiB, 0x5A)
    safety = services.rollback(actor=snap_admin, snapshot=target, confirm="data-01")
    restore = services.restore_to_volume(actor=operator, snapshot=target, name="data-01-copy")
    _lapse(safety)
    _lapse(restore)

    assert run(operations.reconcile) == 2
    safety.refresh_from_db()
    restore.refresh_from_db()
    assert safety.state == Snapshot.State.AVAILABLE and restore.state == Restore.State.DONE
    assert volumes.checksum(Volume.objects.get(pk=data_volume.pk).path) == wanted
    assert volumes.checksum(restore.volume.path) == wanted


def test_a_row_held_by_a_live_worker_is_left_alone(run, operator, data_volume):
    snapshot = services.create_snapshot(actor=operator, volume=data_volume)
    Snapshot.objects.filter(pk=snapshot.pk).update(
        claimed_by="worker-1:4242", lease_until=timezone.now() + timedelta(minutes=1)
    )
    tasks.take.delay(str(snapshot.pk))  # a duplicate delivery
    assert Snapshot.objects.get(pk=snapshot.pk).state == Snapshot.State.CREATING
    assert run(operations.reconcile) == 0
    with pytest.raises(Conflict, match="being worked on now"):
        services.retry(actor=operator, snapshot=Snapshot.objects.get(pk=snapshot.pk))


def test_an_operation_whose_worker_keeps_dying_fails_with_the_reason(run, operator, data_volume, settings):
    snapshot = services.create_snapshot(actor=operator, volume=data_volume)
    Snapshot.objects.filter(pk=snapshot.pk).update(attempts=settings.OPERATION_MAX_ATTEMPTS)
    _lapse(snapshot)
    run(operations.reconcile)
    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.ERROR
    assert "worker was lost 5 times" in snapshot.last_error and "Retry" in snapshot.last_error

    run(services.retry, actor=operator, snapshot=snapshot)  # the owner fixed the cause
    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.AVAILABLE


def test_a_failed_restore_can_be_retried_or_deleted(run, operator, data_volume):
    target = run(services.create_snapshot, actor=operator, volume=data_volume, name="before")
    restore = services.restore_to_volume(actor=operator, snapshot=target, name="data-01-copy")
    work.fail_restore(str(restore.pk), "host went away")
    restore = run(services.retry_restore, actor=operator, restore=Restore.objects.get(pk=restore.pk))
    assert restore.state == Restore.State.DONE and restore.last_error == ""
    assert volumes.checksum(restore.volume.path) == target.disks.get().checksum

    second = services.restore_to_volume(actor=operator, snapshot=target, name="data-01-copy2")
    work.fail_restore(str(second.pk), "host went away")
    services.delete_restore(actor=operator, restore=Restore.objects.get(pk=second.pk))
    assert not Restore.objects.filter(pk=second.pk).exists()
    assert not Volume.objects.filter(name="data-01-copy2").exists()
