"""Operations whose task was lost (its worker killed, its message gone) are resumed by their owner's Retry
or by the reconciler, with the step that fits what the row is."""

from __future__ import annotations

from clouddigit.backends import volumes
from clouddigit.compute.models import Volume
from snapshots import services
from snapshots.models import Snapshot

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
