"""A snapshot copy whose replication worker is killed (SIGKILL) mid-copy finishes on a fresh worker
without re-sending a chunk that had already landed: a real worker process, the filesystem broker in this
test's own folder, a real S3 server and qemu-img (the reconciler is run as beat would)."""

from __future__ import annotations

import os
import time

import pytest

from clouddigit import operations
from clouddigit.backends import volumes
from clouddigit.compute import services as compute
from snapshots import replication, services
from snapshots.models import Snapshot
from tests.test_celery_worker import _database_url
from tests.test_worker_kills import DEADLINE_SECONDS, LEASE_SECONDS, Workers, publishing_to

MiB = 2**20


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.django_db(transaction=True)
def test_a_killed_copy_resumes_without_resending_what_landed(prod, dha, image_stores, settings, tmp_path):
    volume = compute.create_volume(actor=None, project=prod, region=dha, name="db-data", size_bytes=16 * MiB)
    for index in range(4):  # four chunks of different data
        volumes.write_pattern(volume.path, index * 4 * MiB, 4 * MiB, 0x61 + index)
    snapshot = services.create_snapshot(actor=None, volume=volume, name="nightly")
    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.AVAILABLE

    var_dir, kill_file = tmp_path / "var", tmp_path / "kill-at"
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": "filesystem://localhost/",
        "CLOUDDIGIT_VAR_DIR": str(var_dir),
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "CLOUDDIGIT_OPERATION_LEASE_SECONDS": str(LEASE_SECONDS),
        "CLOUDDIGIT_FAULT_KILL_FILE": str(kill_file),
    }
    for slug, region in settings.REGIONS.items():
        prefix = "CLOUDDIGIT_" + slug.upper().replace("-", "_") + "_"
        for key in ("s3_endpoint", "s3_bucket", "s3_access_key", "s3_secret_key"):
            env[prefix + key.upper()] = region[key]
    settings.VAR_DIR = var_dir
    workers = Workers(env, tmp_path)
    try:
        with publishing_to("filesystem://localhost/", var_dir):
            workers.ensure_running()
            kill_file.write_text(f"sent chunk at {4 * MiB} of db-data")  # after the second chunk
            copy = replication.copy_snapshot(actor=None, snapshot=snapshot, target_region="bd-ctg-1")
            workers.wait_for_death("the second chunk")
            landed = Snapshot.objects.get(pk=copy.pk)
            # Chunks go several at a time: what is recorded is what had landed, at least the two first;
            # more may have landed unrecorded while in flight.
            assert landed.state == Snapshot.State.CREATING and landed.bytes_sent >= 8 * MiB
            assert landed.bytes_sent == landed.bytes_done
            held = len(image_stores["bd-ctg-1"].list("chunks/"))
            assert held * 4 * MiB >= landed.bytes_sent

            killed = time.monotonic()
            workers.ensure_running()
            while Snapshot.objects.get(pk=copy.pk).state == Snapshot.State.CREATING:
                assert time.monotonic() - killed < DEADLINE_SECONDS, workers.log_tail()
                operations.reconcile()
                time.sleep(0.3)
    finally:
        workers.stop()
    copy.refresh_from_db()
    assert copy.state == Snapshot.State.AVAILABLE, copy.last_error
    assert copy.attempts == 3  # the killed send, the resumed send, the landing
    assert copy.bytes_total == 16 * MiB and copy.bytes_done == 16 * MiB
    # Every chunk crossed once: those that had landed (recorded or still in flight) were not sent again.
    assert copy.bytes_sent == 16 * MiB - (held * 4 * MiB - landed.bytes_sent)
    assert volumes.checksum(copy.disks.get().layer.path) == snapshot.disks.get().checksum
