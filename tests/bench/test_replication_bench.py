"""Cross-region copy figures, printed as name=value lines; each ratio against a baseline measured in the
same run on the same S3 server (the test SeaweedFS, one bucket per region).

- replication_copy_ratio_vs_boto3: MiB/s of copying a snapshot with SIZE of allocated random data (until
  it is Available: read, hash, send, then land and verify) ÷ MiB/s of boto3's own multipart `upload_file`
  of the same bytes into the target region's bucket. The send and land steps alone are printed next to
  it: landing reads every chunk back from the target, checks it, writes the qcow2 layer and checks the
  whole disk's checksum, which boto3's upload does not do.
- replication_incremental_bytes_ratio: after rewriting 5% of the volume (random 64 KiB clusters, random
  data) and taking a new snapshot, bytes its copy sent ÷ bytes changed.
- replication_restore_ratio: restore-to-new (a volume) from the copy in the target region ÷ from the
  source snapshot in the source region. Both are an overlay on a local layer (a restore reads nothing
  from another region), so it should be near 1: it shows that the copy's standalone layer restores as
  fast as the source's.

SIZE is 1 GiB; `CLOUDDIGIT_BENCH_REPLICATION_MIB` makes it smaller where 1 GiB is too slow.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from clouddigit.backends import volumes
from clouddigit.compute import services as compute
from snapshots import replication, replication_work, services
from snapshots.models import Restore, Snapshot

MiB = 2**20
CLUSTER = 64 * 1024
SIZE = int(os.environ.get("CLOUDDIGIT_BENCH_REPLICATION_MIB", "1024")) * MiB
RESTORES = 5


def _snap(run, volume, name) -> Snapshot:
    snapshot = run(services.create_snapshot, actor=None, volume=volume, name=name)
    assert snapshot.state == Snapshot.State.AVAILABLE, snapshot.last_error
    return snapshot


def _copy(run, snapshot) -> tuple[Snapshot, float]:
    started = time.perf_counter()
    copy = run(replication.copy_snapshot, actor=None, snapshot=snapshot, target_region="bd-ctg-1")
    seconds = time.perf_counter() - started
    assert copy.state == Snapshot.State.AVAILABLE, copy.last_error
    return copy, seconds


def _restore_seconds(run, snapshot: Snapshot, prefix: str) -> float:
    timings = []
    for index in range(RESTORES):
        started = time.perf_counter()
        restore = run(services.restore_to_volume, actor=None, snapshot=snapshot, name=f"{prefix}-{index}")
        timings.append(time.perf_counter() - started)
        assert restore.state == Restore.State.DONE, restore.last_error
    return statistics.median(timings)


@pytest.mark.bench
def test_replication_figures(run, prod, dha, image_stores, monkeypatch, capsys):
    volume = compute.create_volume(actor=None, project=prod, region=dha, name="bench-data", size_bytes=SIZE)
    with tempfile.TemporaryDirectory(prefix="clouddigit-bench-") as scratch:
        raw = Path(scratch) / "data.raw"
        with raw.open("wb") as out:
            for _ in range(0, SIZE, 64 * MiB):
                out.write(os.urandom(min(64 * MiB, SIZE)))
        for offset in range(0, SIZE, 64 * MiB):
            with raw.open("rb") as source:
                source.seek(offset)
                volumes.write_bytes(volume.path, offset, source.read(64 * MiB))
        first = _snap(run, volume, "full")

        # boto3's own multipart upload of the same bytes, to the target region's bucket.
        target = image_stores["bd-ctg-1"]
        started = time.perf_counter()
        target.client.upload_file(str(raw), target.bucket, "bench/boto3.raw", Config=TransferConfig())
        boto3_seconds = time.perf_counter() - started

    send_seconds = []
    real_send = replication_work.send

    def timed_send(copy_id):
        started = time.perf_counter()
        try:
            return real_send(copy_id)
        finally:
            send_seconds.append(time.perf_counter() - started)

    land_seconds = []
    real_land = replication_work.land

    def timed_land(copy_id):
        started = time.perf_counter()
        try:
            return real_land(copy_id)
        finally:
            land_seconds.append(time.perf_counter() - started)

    monkeypatch.setattr(replication_work, "send", timed_send)
    monkeypatch.setattr(replication_work, "land", timed_land)
    copy, copy_seconds = _copy(run, first)
    assert copy.bytes_sent == SIZE

    # Rewrite 5% of the volume: random clusters, random data, each written once.
    volume.refresh_from_db()  # the snapshot sealed its file: writes go to the new top layer
    rng = random.Random(16)
    clusters = rng.sample(range(SIZE // CLUSTER), SIZE // CLUSTER // 20)
    for index in clusters:
        volumes.write_bytes(volume.path, index * CLUSTER, os.urandom(CLUSTER))
    changed = len(clusters) * CLUSTER
    second, _ = _copy(run, _snap(run, volume, "five-percent"))

    source_restore = _restore_seconds(run, first, "from-source")
    target_restore = _restore_seconds(run, copy, "from-copy")

    mib = SIZE / MiB
    with capsys.disabled():
        print()
        print(f"replication_bench_size_mib={mib:.0f}")
        print(f"replication_boto3_upload_file_mib_s={mib / boto3_seconds:.1f}")
        print(f"replication_copy_mib_s={mib / copy_seconds:.1f}")
        print(f"replication_send_mib_s={mib / send_seconds[0]:.1f}")
        print(f"replication_land_mib_s={mib / land_seconds[0]:.1f}")
        print(f"replication_copy_ratio_vs_boto3={boto3_seconds / copy_seconds:.2f}")
        print(f"replication_send_ratio_vs_boto3={boto3_seconds / send_seconds[0]:.2f}")
        print(f"replication_incremental_bytes_changed={changed}")
        print(f"replication_incremental_bytes_sent={second.bytes_sent}")
        print(f"replication_incremental_bytes_ratio={second.bytes_sent / changed:.3f}")
        print(f"replication_restore_source_ms={source_restore * 1000:.0f}")
        print(f"replication_restore_target_ms={target_restore * 1000:.0f}")
        print(f"replication_restore_ratio={target_restore / source_restore:.2f}")
