"""A worker killed in the middle of a create or a delete: the row says where it stopped, diagnose and the
sweeper explain it, a retry completes it, and no byte is lost.

The kill is real: the worker step runs in a child process that SIGKILLs itself right after one file step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from clouddigit.backends import volumes
from clouddigit.compute import services as compute
from clouddigit.compute.models import Layer, Volume
from snapshots import diagnosis, services, work
from snapshots.models import Snapshot
from tests.worker import created

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20

KILL = """
import os, signal
from snapshots import chains, work
real, calls = chains.{function}, []
def dying(*args, **kwargs):
    calls.append(1)
    if "{when}" == "before" and len(calls) == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    if "{when}" == "after" and len(calls) == {n}:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
chains.{function} = dying
work.{step}("{snapshot_id}")
"""


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _killed_worker(step: str, snapshot_id: str, *, function: str, when: str, n: int) -> int:
    """Run a worker step in a child process that SIGKILLs itself before/after the n-th call of `function`."""
    code = KILL.format(function=function, when=when, n=n, step=step, snapshot_id=snapshot_id)
    env = {**os.environ, "DATABASE_URL": _database_url()}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode


@pytest.fixture
def no_queue(monkeypatch):
    """Keep tasks out of this process: the killed child is the worker."""
    queued = []
    monkeypatch.setattr(services, "enqueue", lambda task, *args, **kwargs: queued.append((task.name, args)))
    return queued


def _age(snapshot: Snapshot, minutes: int) -> None:
    Snapshot.objects.filter(pk=snapshot.pk).update(
        step_started_at=timezone.now() - timedelta(minutes=minutes)
    )
    snapshot.refresh_from_db()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_create_killed_between_two_volumes_is_explained_and_completed_by_retry(
    operator, make_vm, prod, dha, no_queue
):
    vm = make_vm(prod, "db-01")
    data = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="db-01-data", size_bytes=16 * MiB)
    )
    compute.attach_volume(actor=None, volume=data, vm=vm, device="vdb")
    volumes.write_pattern(data.path, 0, 2 * MiB, 0x77)
    before = {v.name: volumes.checksum(v.path) for v in vm.volumes.all()}

    snapshot = services.create_snapshot(actor=operator, vm=vm)
    assert _killed_worker("take", str(snapshot.pk), function="seal_active", when="before", n=2) == -9
    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.CREATING and snapshot.step == "creating overlays"
    assert snapshot.disks.filter(layer__isnull=False).count() == 1  # one volume sealed, then the kill

    _age(snapshot, 6)
    diagnosis.sweep()
    snapshot.refresh_from_db()
    assert snapshot.stuck_reason.startswith("Stuck: Snapshot backend slow")
    [finding] = diagnosis.diagnose(snapshot)
    assert "creating overlays" in finding.detail and finding.fix

    services.retry(actor=operator, snapshot=snapshot)
    work.take(str(snapshot.pk))
    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.AVAILABLE and snapshot.stuck_reason == ""
    assert snapshot.consistency_achieved == "crash" and "interruption" in snapshot.consistency_reason
    for disk in snapshot.disks.select_related("layer", "volume"):
        assert volumes.checksum(disk.layer.path) == before[disk.volume_name]
        assert volumes.checksum(disk.volume.path) == before[disk.volume_name]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_delete_killed_after_the_first_merge_is_completed_by_retry(operator, data_volume, no_queue):
    first = services.create_snapshot(actor=operator, volume=data_volume, name="first")
    work.take(str(first.pk))
    data_volume.refresh_from_db()
    volumes.write_pattern(data_volume.path, MiB, MiB, 0x88)
    second = services.create_snapshot(actor=operator, volume=data_volume, name="second")
    work.take(str(second.pk))
    work.measure(str(second.pk))
    data_volume.refresh_from_db()
    volumes.write_pattern(data_volume.path, 2 * MiB, MiB, 0x99)
    live = volumes.checksum(data_volume.path)
    first_layer = Snapshot.objects.get(pk=first.pk).disks.get().layer

    services.delete_snapshot(actor=operator, snapshot=Snapshot.objects.get(pk=first.pk), confirm=first.name)
    killed = _killed_worker("finish_delete", str(first.pk), function="volumes.rebase", when="after", n=1)
    assert killed == -9  # the child file is merged, its row and the layer's are not
    assert Layer.objects.filter(pk=first_layer.pk).exists()  # the row still says what is left to do

    work.finish_delete(str(first.pk))  # the redelivered task (or a retry) finishes the merge
    assert not Snapshot.objects.filter(pk=first.pk).exists()
    assert not Layer.objects.filter(pk=first_layer.pk).exists() and not Path(first_layer.path).exists()
    second_disk = Snapshot.objects.get(pk=second.pk).disks.get()
    assert volumes.checksum(second_disk.layer.path) == second_disk.checksum
    assert volumes.checksum(Volume.objects.get(pk=data_volume.pk).path) == live
