"""Every long operation survives a worker killed with SIGKILL at each of its steps, on the embedded
`filesystem://` broker (which loses the message with the worker) and on Redis.

One real worker process runs at a time against the test database. For each case the test names a step
in the worker's kill file (`clouddigit.operations.checkpoint`), starts the operation, sees the worker die
there, starts a fresh worker (which is also the next case's) and runs the reconciler, as beat would,
until the operation is final. Then it compares what the guest would read with what it should read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import kombu.pools
import pytest

from clouddigit import operations
from clouddigit.backends import volumes
from clouddigit.celery import app as celery_app
from clouddigit.compute import services as compute
from clouddigit.compute.models import VM, Volume
from images import files as image_files
from images import services as images
from images.models import Image
from policies import drills
from policies.models import Drill
from snapshots import replication
from snapshots import services as snapshots
from snapshots.models import Restore, Snapshot, SnapshotDisk
from tests.conftest import redis_broker_url
from tests.test_celery_worker import ROOT, WORKER, _database_url
from tests.worker import created

MiB = 2**20
LEASE_SECONDS = 2
DEADLINE_SECONDS = 60


class Workers:
    """One worker process at a time; a new one replaces the one the kill file killed."""

    def __init__(self, env: dict, log_dir: Path):
        self.env, self.log_dir, self.process, self.started = env, log_dir, None, 0

    def ensure_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.started += 1
        log = (self.log_dir / f"worker-{self.started}.log").open("w")
        queues = "hypervisor.bd-dha-1,hypervisor.bd-ctg-1,replication,default"
        command = [sys.executable, *WORKER]
        command[command.index("-Q") + 1] = queues
        self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        return "\n".join((self.log_dir / f"worker-{self.started}.log").read_text().splitlines()[-30:])

    def wait_for_death(self, step: str) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.process.returncode == -9, f"the worker was not killed at {step!r}:\n{self.log_tail()}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@contextmanager
def publishing_to(broker_url: str, var_dir: Path):
    """Tasks queued by this process go to the real broker (not run eagerly), as the web server's do."""
    conf = celery_app.conf
    saved = conf.broker_url, conf.broker_transport_options, conf.task_always_eager
    # Celery reads CELERY_BROKER_URL from the environment before its settings (.ci/run sets it).
    saved_environ = os.environ.get("CELERY_BROKER_URL")

    def reset_pools():
        # kombu keeps producer pools per connection process-wide: drop them all, or a later publish on
        # the same URL acquires from a pool closed here.
        kombu.pools.reset()
        celery_app._pool = None
        celery_app.amqp._producer_pool = None

    options = {}
    if broker_url.startswith("filesystem"):
        folder = var_dir / "broker" / "queue"
        folder.mkdir(parents=True, exist_ok=True)
        (var_dir / "broker" / "processed").mkdir(parents=True, exist_ok=True)
        options = {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(var_dir / "broker" / "processed"),
            "store_processed": False,
        }
    reset_pools()
    os.environ["CELERY_BROKER_URL"] = broker_url
    conf.broker_url, conf.broker_transport_options, conf.task_always_eager = broker_url, options, False
    try:
        yield
    finally:
        reset_pools()
        if saved_environ is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = saved_environ
        conf.broker_url, conf.broker_transport_options, conf.task_always_eager = saved


@dataclass
class Case:
    name: str
    kill_at: str
    start: Callable[[], object]
    final: Callable[[object], bool]
    check: Callable[[object], None]


def _row(model, pk):
    return model.objects.filter(pk=pk).first()


def _checksums(vm: VM) -> dict[str, str]:
    return {v.device: volumes.checksum(v.path) for v in Volume.objects.filter(vm=vm)}


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.timeout(900)
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broker", ["filesystem", "redis"])
def test_every_operation_survives_a_sigkill_at_every_step(
    broker, make_vm, prod, dha, ctg, image_stores, qcow2_file, settings, tmp_path
):
    broker_url = redis_broker_url() if broker == "redis" else "filesystem://localhost/"
    var_dir, kill_file = tmp_path / "var", tmp_path / "kill-at"
    settings.VAR_DIR = var_dir  # uploads are written here and read there by the worker
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": broker_url,
        "CLOUDDIGIT_VAR_DIR": str(var_dir),
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "CLOUDDIGIT_OPERATION_LEASE_SECONDS": str(LEASE_SECONDS),
        "CLOUDDIGIT_FAULT_KILL_FILE": str(kill_file),
    }
    for slug, region in settings.REGIONS.items():
        prefix = "CLOUDDIGIT_" + slug.upper().replace("-", "_") + "_"
        env[prefix + "S3_ENDPOINT"] = region["s3_endpoint"]
        env[prefix + "S3_BUCKET"] = region["s3_bucket"]
        env[prefix + "S3_ACCESS_KEY"] = region["s3_access_key"]
        env[prefix + "S3_SECRET_KEY"] = region["s3_secret_key"]

    vm = make_vm(prod, "db-01")
    data = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="db-01-data", size_bytes=16 * MiB)
    )
    compute.attach_volume(actor=None, volume=data, vm=vm, device="vdb")
    volumes.write_pattern(Volume.objects.get(pk=data.pk).path, 0, 2 * MiB, 0x31)
    upload = qcow2_file(size="8M", pattern=0x42)
    upload_checksum = volumes.checksum(upload)
    state = {"taken": [], "n": 0}

    def unique(prefix: str) -> str:
        state["n"] += 1
        return f"{prefix}-{state['n']}"

    # --- the operations -------------------------------------------------------------------------
    def take():
        # The live data moves on between cases.
        volumes.write_pattern(Volume.objects.get(pk=data.pk).path, 0, MiB, 0x40 + state["n"])
        state["before"] = _checksums(vm)
        return snapshots.create_snapshot(actor=None, vm=vm, name=unique("snap")).pk

    def taken_ok(pk):
        snapshot = _row(Snapshot, pk)
        got = {d.device: volumes.checksum(d.layer.path) for d in snapshot.disks.select_related("layer")}
        assert got == state["before"]
        assert _checksums(vm) == state["before"]
        state["taken"].append(pk)

    def roll_back():
        target = Snapshot.objects.get(pk=state["taken"][0])
        volumes.write_pattern(Volume.objects.get(pk=data.pk).path, MiB, MiB, 0x66)
        state["replaced"] = _checksums(vm)
        return snapshots.rollback(actor=None, snapshot=target, confirm="db-01").pk

    def rolled_back_ok(pk):
        safety = _row(Snapshot, pk)
        target = {d.device: d.checksum for d in Snapshot.objects.get(pk=state["taken"][0]).disks.all()}
        assert _checksums(vm) == target, "Content mismatch: the volumes were not rolled back"
        kept = {d.device: volumes.checksum(d.layer.path) for d in safety.disks.select_related("layer")}
        assert kept == state["replaced"]

    def restore():
        target = Snapshot.objects.get(pk=state["taken"][1])
        return snapshots.restore_to_vm(actor=None, snapshot=target, name=unique("copy"), vpc="test-vpc").pk

    def restored_ok(pk):
        restore = _row(Restore, pk)
        target = {d.device: d.checksum for d in Snapshot.objects.get(pk=state["taken"][1]).disks.all()}
        assert _checksums(restore.vm) == target and restore.vm.state == VM.State.RUNNING

    def drill():
        return drills.run_drill(actor=None, vm=vm).pk

    def drilled_ok(pk):
        drill = _row(Drill, pk)
        assert drill.state == Drill.State.PASSED, (drill.error, drill.checks)
        assert not VM.objects.filter(name__contains="-drill-").exists()

    def delete():
        state["deleted"] = state["taken"].pop()
        state["kept"] = {
            str(d.pk): d.checksum for s in state["taken"] for d in Snapshot.objects.get(pk=s).disks.all()
        }
        state["live"] = _checksums(vm)
        return snapshots.delete_snapshot(
            actor=None, snapshot=(doomed := Snapshot.objects.get(pk=state["deleted"])), confirm=doomed.name
        ).pk

    def deleted_ok(pk):
        assert not Snapshot.objects.filter(pk=pk).exists()
        for disk_pk, checksum in state["kept"].items():
            disk = SnapshotDisk.objects.select_related("layer").get(pk=disk_pk)
            assert volumes.checksum(disk.layer.path) == checksum
        assert _checksums(vm) == state["live"]

    def import_image():
        image = images.start_import(
            actor=None, project=prod, region=dha, name=unique("golden"), declared_format="qcow2"
        )
        with upload.open("rb") as stream:
            images.receive_upload(actor=None, image=image, stream=stream, length=upload.stat().st_size)
        return image.pk

    def imported_ok(pk):
        image = _row(Image, pk)
        assert image.guest_sha256 == upload_checksum and image_files.cache_path(image).exists()
        assert not image_files.staging_path(image).exists()

    def promote():
        snapshot = Snapshot.objects.get(pk=state["taken"][0])
        state["promoted"] = snapshot.disks.get(device="vdb").checksum
        name = unique("promoted")
        return images.promote_snapshot(actor=None, snapshot=snapshot, name=name, device="vdb").pk

    def promoted_ok(pk):
        assert _row(Image, pk).guest_sha256 == state["promoted"]

    def copy():
        source = Image.objects.filter(state=Image.State.AVAILABLE, source=Image.Source.UPLOAD).first()
        state["copied"] = source.sha256
        return images.copy_image(actor=None, image=source, region=ctg, name=unique("copied")).pk

    def copied_ok(pk):
        image = _row(Image, pk)
        assert image.sha256 == state["copied"] and image.region_id == ctg.slug

    def copy_snapshot():
        return replication.copy_snapshot(
            actor=None, snapshot=Snapshot.objects.get(pk=state["taken"][0]), target_region=ctg.slug
        ).pk

    def snapshot_copied_ok(pk):
        copied = _row(Snapshot, pk)
        source = {d.device: d.checksum for d in Snapshot.objects.get(pk=state["taken"][0]).disks.all()}
        got = {d.device: volumes.checksum(d.layer.path) for d in copied.disks.select_related("layer")}
        assert got == source and copied.region_id == ctg.slug
        assert copied.bytes_sent <= copied.bytes_total  # what had landed before the kill was not sent again

    def create_vm():
        made = compute.create_vm(
            actor=None,
            project=prod,
            region=dha,
            name=unique("made"),
            flavor="std-2x4",
            vpc="test-vpc",
            boot_size_bytes=64 * MiB,
            boot_source_path=str(upload),
            start=True,
        )
        return made.pk

    def vm_created_ok(pk):
        made = _row(VM, pk)
        boot = made.volumes.get()
        assert (made.state, boot.state) == (VM.State.RUNNING, Volume.State.ATTACHED)
        assert volumes.read_bytes(boot.path, 0, MiB) == b"\x42" * MiB
        assert volumes.info(boot.path)["virtual-size"] == 64 * MiB

    def create_volume():
        return compute.create_volume(
            actor=None, project=prod, region=dha, name=unique("vol"), size_bytes=16 * MiB
        ).pk

    def volume_created_ok(pk):
        made = _row(Volume, pk)
        assert made.state == Volume.State.AVAILABLE
        assert volumes.info(made.path)["virtual-size"] == 16 * MiB

    def resize():
        spare = created(
            compute.create_volume(
                actor=None, project=prod, region=dha, name=unique("grow"), size_bytes=16 * MiB
            )
        )
        return compute.resize_volume(actor=None, volume=spare, size_gib=1).pk

    def resized_ok(pk):
        grown = _row(Volume, pk)
        assert (grown.state, grown.size_bytes) == (Volume.State.AVAILABLE, 2**30)
        assert volumes.info(grown.path)["virtual-size"] == 2**30

    def vm_final(pk):
        return _row(VM, pk).state not in {VM.State.CREATING, VM.State.STARTING}

    def volume_final(pk):
        return not _row(Volume, pk).in_transition

    def snapshot_final(pk):
        row = _row(Snapshot, pk)
        return row is None or row.state in {Snapshot.State.AVAILABLE, Snapshot.State.ERROR}

    def restore_final(pk):
        return _row(Restore, pk).state != Restore.State.RESTORING

    def image_final(pk):
        return _row(Image, pk).state != Image.State.PROCESSING

    def drill_final(pk):
        return _row(Drill, pk).state != Drill.State.RUNNING

    cases = [
        Case("vm create", "copied image into made", create_vm, vm_final, vm_created_ok),
        Case("vm create", "defining VM made", create_vm, vm_final, vm_created_ok),
        Case("volume create", "creating file of vol", create_volume, volume_final, volume_created_ok),
        Case("resize", "resizing grow", resize, volume_final, resized_ok),
        Case("create", "creating overlays", take, snapshot_final, taken_ok),
        Case("create", "sealed db-01-boot", take, snapshot_final, taken_ok),
        Case("create", "sealed db-01-data", take, snapshot_final, taken_ok),
        Case("roll-back", "rolling db-01-boot", roll_back, snapshot_final, rolled_back_ok),
        Case("roll-back", "sealed db-01-boot", roll_back, snapshot_final, rolled_back_ok),
        Case("restore", "restored file of", restore, restore_final, restored_ok),
        Case("restore", "starting restored VM", restore, restore_final, restored_ok),
        Case("drill", "drill restore started", drill, drill_final, drilled_ok),
        Case("drill", "drill checked", drill, drill_final, drilled_ok),
        Case("import", "convert", import_image, image_final, imported_ok),
        Case("import", "checksum", import_image, image_final, imported_ok),
        Case("import", "store in", import_image, image_final, imported_ok),
        Case("import", "stored; keeping", import_image, image_final, imported_ok),
        Case("promote", "flatten", promote, image_final, promoted_ok),
        Case("copy", "copy from", copy, image_final, copied_ok),
        Case(
            "snapshot copy",
            "sent chunk at 0 of db-01-data",
            copy_snapshot,
            snapshot_final,
            snapshot_copied_ok,
        ),
        Case(
            "snapshot copy",
            "wrote the manifest of db-01-data",
            copy_snapshot,
            snapshot_final,
            snapshot_copied_ok,
        ),
        Case("snapshot copy", "landing db-01-boot", copy_snapshot, snapshot_final, snapshot_copied_ok),
        Case("delete", "merging", delete, snapshot_final, deleted_ok),
        Case("delete", "merged db-01-boot", delete, snapshot_final, deleted_ok),
    ]

    workers = Workers(env, tmp_path)
    timings = []
    try:
        with publishing_to(broker_url, var_dir):
            workers.ensure_running()
            for case in cases:
                began = time.monotonic()
                kill_file.write_text(case.kill_at)
                pk = case.start()
                workers.wait_for_death(case.kill_at)
                killed = time.monotonic()
                workers.ensure_running()
                while not case.final(pk):
                    assert time.monotonic() - killed < DEADLINE_SECONDS, (
                        f"{case.name} killed at {case.kill_at!r} did not finish:\n{workers.log_tail()}"
                    )
                    operations.reconcile()
                    time.sleep(0.3)
                row = (
                    _row(Snapshot, pk)
                    or _row(Restore, pk)
                    or _row(Image, pk)
                    or _row(Drill, pk)
                    or _row(VM, pk)
                    or _row(Volume, pk)
                )
                failed = getattr(row, "last_error", "") or getattr(row, "error", "")
                assert row is None or row.state not in {"error", "failed"}, (case.name, case.kill_at, failed)
                case.check(pk)
                timings.append(f"{case.name} @ {case.kill_at}: {time.monotonic() - began:.1f} s")
    finally:
        workers.stop()
    print("\n".join(timings))
