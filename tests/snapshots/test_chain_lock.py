"""Two jobs on one volume chain at once: qemu-img fails the second at once (`Failed to get "write" lock`)
unless the jobs take turns. The collisions here are real: one job runs in a thread, and the other starts
while the first one's qemu-img process is still reading or rewriting a file of the chain."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from clouddigit.backends import volumes
from clouddigit.backends.chainlock import ChainBusy
from clouddigit.compute import services as compute
from clouddigit.compute.models import Layer
from snapshots import chains, services, work
from snapshots.models import Snapshot, SnapshotDisk
from tests.worker import created

MiB = 2**20


@pytest.fixture
def two_snapshots(monkeypatch, prod, dha):
    """Snapshot `first` holds 128 MiB of data; `second` sits on it. Deleting `first` rebases the second
    layer, copying those 128 MiB into it; checksumming `second` reads them: both take a while."""
    monkeypatch.setattr(services, "enqueue", lambda *args, **kwargs: None)  # this test is the worker
    volume = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="big", size_bytes=256 * MiB)
    )
    volumes.write_pattern(volume.path, 0, 128 * MiB, 0x5A)
    first = services.create_snapshot(actor=None, volume=volume, name="first")
    work.take(str(first.pk))
    volume.refresh_from_db()
    volumes.write_pattern(volume.path, 0, MiB, 0x6B)
    second = services.create_snapshot(actor=None, volume=volume, name="second")
    work.take(str(second.pk))
    return Snapshot.objects.get(pk=first.pk), Snapshot.objects.get(pk=second.pk)


def _in_thread(function, *args) -> tuple[threading.Thread, list[Exception]]:
    errors: list[Exception] = []

    def target() -> None:
        try:
            function(*args)
        except Exception as error:  # handed to the test, which asserts there is none
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, errors


def _wait_for_qemu_img(verb: str, path: str) -> None:
    """Return once a `qemu-img <verb>` process that names `path` runs (it then holds qemu's locks)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            if args[:2] == [b"qemu-img", verb.encode()] and any(path.encode() in arg for arg in args):
                return
        time.sleep(0.005)
    raise AssertionError(f"no qemu-img {verb} of {path} started")


@pytest.mark.django_db(transaction=True)
def test_deleting_a_snapshot_waits_for_a_measurement_of_the_same_chain(two_snapshots):
    first, second = two_snapshots
    first_layer, second_layer = first.disks.get().layer, second.disks.get().layer

    measuring, errors = _in_thread(work.measure, str(second.pk))
    _wait_for_qemu_img("convert", second_layer.path)  # the checksum reads the second layer
    services.delete_snapshot(actor=None, snapshot=first, confirm=first.name)
    work.finish_delete(str(first.pk))
    measuring.join()

    assert errors == []
    assert not Snapshot.objects.filter(pk=first.pk).exists() and not Path(first_layer.path).exists()
    second_disk = SnapshotDisk.objects.select_related("layer").get(snapshot=second)
    assert second_disk.layer.parent is None
    assert second_disk.checksum == volumes.checksum(second_layer.path)  # measured before the merge
    assert volumes.read_bytes(second_layer.path, MiB - 1, 2) == b"\x6b\x5a"


@pytest.mark.django_db(transaction=True)
def test_measuring_a_snapshot_waits_for_a_delete_merging_into_it(two_snapshots):
    first, second = two_snapshots
    second_layer = second.disks.get().layer
    services.delete_snapshot(actor=None, snapshot=first, confirm=first.name)

    deleting, errors = _in_thread(work.finish_delete, str(first.pk))
    _wait_for_qemu_img("rebase", second_layer.path)  # the merge rewrites the second layer
    work.measure(str(second.pk))
    deleting.join()

    assert errors == []
    assert not Snapshot.objects.filter(pk=first.pk).exists()
    second = Snapshot.objects.get(pk=second.pk)
    second_disk = second.disks.select_related("layer").get()
    assert second_disk.layer.parent is None and second.sizes_measured_at is not None
    assert second_disk.checksum == volumes.checksum(second_layer.path)
    assert second.reclaimable_bytes == 0  # the live volume still reads all of the second layer
    assert Layer.objects.count() == 1


def test_a_restored_volume_shares_the_lock_of_the_chain_it_was_restored_from(
    run, operator, data_volume, prod, dha, settings
):
    settings.VOLUME_CHAIN_WAIT_SECONDS = 0.2
    snapshot = run(services.create_snapshot, actor=operator, volume=data_volume, name="nightly")
    restore = run(services.restore_to_volume, actor=operator, snapshot=snapshot, name="data-01-copy")
    other = created(compute.create_volume(actor=None, project=prod, region=dha, name="other", size_bytes=MiB))

    layer = snapshot.disks.get().layer

    with chains.locked(data_volume, purpose="deleting snapshot nightly"):
        for same_chain in (restore.volume, layer):
            with pytest.raises(ChainBusy, match=r"^Volume chain busy: deleting snapshot nightly \(since "):
                with chains.locked(same_chain, purpose="reading it", shared=True):
                    pass
        with chains.locked(other, purpose="taking snapshot weekly"):
            pass  # another chain: no wait (waiting would raise ChainBusy after 0.2 s)
