"""Snapshot figures, printed as name=value lines; ratios against a baseline measured in the same run.

- create on a 100 GiB (sparse) volume vs a 1 GiB one, through the service (rows, freeze, overlay)
- restore-to-new of a 20 GiB vs a 1 GiB snapshot
- delete (merge) throughput vs `cp` of the same bytes
- the snapshot list with 10,000 snapshots: median latency and query count
"""

from __future__ import annotations

import statistics
import subprocess
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clouddigit.backends import volumes
from clouddigit.compute import services as compute
from clouddigit.compute import work as compute_work
from snapshots import services, work
from snapshots.models import Snapshot, SnapshotDisk
from tests.worker import created

GiB, MiB = 2**30, 2**20
RUNS = 10


@pytest.fixture
def no_queue(monkeypatch):
    monkeypatch.setattr(services, "enqueue", lambda *args, **kwargs: None)


def _median(samples: list[float]) -> float:
    return statistics.median(samples)


def _create_seconds(operator, vm) -> list[float]:
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        snapshot = services.create_snapshot(actor=operator, vm=vm)
        work.take(str(snapshot.pk))
        timings.append(time.perf_counter() - started)
    return timings


@pytest.mark.bench
def test_snapshot_create_restore_and_merge(operator, make_vm, prod, dha, no_queue, capsys, tmp_path):
    small, large = make_vm(prod, "small", boot_gib=1), make_vm(prod, "large", boot_gib=100)
    for vm in (small, large):
        compute.start_vm(actor=None, vm=vm)
        compute_work.apply_power_state(str(vm.pk))
        vm.refresh_from_db()
    create_small, create_large = _create_seconds(operator, small), _create_seconds(operator, large)

    restore_times = {}
    for label, size in (("1g", GiB), ("20g", 20 * GiB)):
        volume = created(
            compute.create_volume(actor=None, project=prod, region=dha, name=f"r-{label}", size_bytes=size)
        )
        volumes.write_pattern(volume.path, 0, 8 * MiB, 0x5A)
        snapshot = services.create_snapshot(actor=operator, volume=volume)
        work.take(str(snapshot.pk))
        snapshot.refresh_from_db()
        timings = []
        for run in range(RUNS):
            started = time.perf_counter()
            restore = services.restore_to_volume(actor=operator, snapshot=snapshot, name=f"r-{label}-{run}")
            work.finish_restore(str(restore.pk))
            timings.append(time.perf_counter() - started)
        restore_times[label] = _median(timings)

    merge_bytes = 256 * MiB
    volume = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="merge", size_bytes=GiB)
    )
    first = services.create_snapshot(actor=operator, volume=volume)
    work.take(str(first.pk))
    volume.refresh_from_db()
    volumes.write_pattern(volume.path, 0, merge_bytes, 0x3C)  # this data becomes the next layer
    second = services.create_snapshot(actor=operator, volume=volume)
    work.take(str(second.pk))
    layer_path = Snapshot.objects.get(pk=second.pk).disks.get().layer.path
    started = time.perf_counter()
    subprocess.run(["cp", layer_path, str(tmp_path / "copy.qcow2")], check=True)
    cp_seconds = time.perf_counter() - started
    services.delete_snapshot(actor=operator, snapshot=Snapshot.objects.get(pk=second.pk), confirm=second.name)
    started = time.perf_counter()
    work.finish_delete(str(second.pk))
    merge_seconds = time.perf_counter() - started

    with capsys.disabled():
        print()
        print(f"snapshot_create_1g_median_ms={_median(create_small) * 1000:.1f}")
        print(f"snapshot_create_100g_median_ms={_median(create_large) * 1000:.1f}")
        print(f"snapshot_create_ratio_100g_1g={_median(create_large) / _median(create_small):.2f}")
        print(f"restore_to_new_1g_median_ms={restore_times['1g'] * 1000:.1f}")
        print(f"restore_to_new_20g_median_ms={restore_times['20g'] * 1000:.1f}")
        print(f"restore_to_new_ratio_20g_1g={restore_times['20g'] / restore_times['1g']:.2f}")
        print(f"merge_mib_per_s={merge_bytes / MiB / merge_seconds:.0f}")
        print(f"cp_mib_per_s={merge_bytes / MiB / cp_seconds:.0f}")
        print(f"merge_to_cp_throughput_ratio={cp_seconds / merge_seconds:.2f}")


@pytest.mark.bench
def test_snapshot_list_with_10000_snapshots(client, alice, operator, data_volume, capsys):
    template = Snapshot(
        project=data_volume.project,
        region=data_volume.region,
        kind="volume",
        consistency_requested="application",
        consistency_achieved="application",
        state="available",
        created_by="bench",
    )
    rows = []
    for index in range(10_000):
        rows.append(
            Snapshot(
                **{
                    **{
                        f.attname: getattr(template, f.attname)
                        for f in Snapshot._meta.concrete_fields
                        if f.attname not in {"id", "name", "tags"}
                    },
                    "name": f"s-{index:05d}",
                }
            )
        )
    Snapshot.objects.bulk_create(rows, batch_size=2000)
    SnapshotDisk.objects.bulk_create(
        [
            SnapshotDisk(
                snapshot=s,
                volume=data_volume,
                volume_name=data_volume.name,
                size_bytes=data_volume.size_bytes,
                overlay_path=f"/nonexistent/{s.pk}",
            )
            for s in rows
        ],
        batch_size=2000,
    )
    client.force_login(alice)
    timings = {}
    for label, url in (("console", "/snapshots/"), ("api", "/api/v1/compute/snapshots/")):
        client.get(url)
        samples = []
        for _ in range(RUNS):
            started = time.perf_counter()
            assert client.get(url).status_code == 200
            samples.append(time.perf_counter() - started)
        timings[label] = _median(samples)
    with CaptureQueriesContext(connection) as first_page:
        client.get("/snapshots/")
    with CaptureQueriesContext(connection) as last_page:
        client.get("/snapshots/?page=200")
    with capsys.disabled():
        print()
        print("snapshot_list_rows=10000")
        print(f"snapshot_list_console_median_ms={timings['console'] * 1000:.1f}")
        print(f"snapshot_list_api_median_ms={timings['api'] * 1000:.1f}")
        print(f"snapshot_list_queries_page_1={len(first_page)}")
        print(f"snapshot_list_queries_page_200={len(last_page)}")
    assert len(first_page) == len(last_page)
