"""Scratch left by imports: a failed operation removes its staging and upload files at once; the scheduled
sweep removes those nothing in flight owns and aborts multipart uploads a killed worker left in S3."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from clouddigit.backends.objectstore import ObjectStoreError
from clouddigit.celery import app as celery_app
from images import cleanup, services
from images.models import Image

HOURS = 3600


@pytest.fixture
def dead_store(settings, dha):
    """The region's object store does not answer (connection refused at once)."""
    settings.REGIONS = {
        **settings.REGIONS,
        dha.slug: {**settings.REGIONS[dha.slug], "s3_endpoint": "http://127.0.0.1:9"},
    }


def _images_dir(region) -> Path:
    path = Path(region.volume_dir) / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_a_failed_import_leaves_no_staging_or_upload_file(run, bob, prod, dha, qcow2_file, dead_store):
    image = services.start_import(actor=bob, project=prod, region=dha, name="golden", declared_format="qcow2")
    source = qcow2_file()

    with open(source, "rb") as stream, pytest.raises(ObjectStoreError):
        run(services.receive_upload, actor=bob, image=image, stream=stream, length=source.stat().st_size)

    image.refresh_from_db()
    assert image.state == Image.State.FAILED and "127.0.0.1:9" in image.last_error
    assert not image.upload_path.exists()
    assert list(_images_dir(dha).iterdir()) == []  # the converted file never reached the store: gone too


def _scratch(path: Path, age_hours: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 4096)
    then = time.time() - age_hours * HOURS
    os.utime(path, (then, then))
    return path


def _image(project, region, name, state, **fields) -> Image:
    return Image.objects.create(
        project=project, region=region, name=name, state=state, created_by="t", **fields
    )


def test_the_sweep_removes_old_scratch_that_no_image_in_flight_owns(prod, dha, settings):
    settings.IMAGE_SCRATCH_MAX_AGE_HOURS = 24
    processing = _image(prod, dha, "busy", Image.State.PROCESSING)
    failed = _image(prod, dha, "broken", Image.State.FAILED)
    uploads = Path(django_settings.VAR_DIR) / "uploads"
    staging = _images_dir(dha)
    kept = [
        _scratch(staging / f"{processing.id}.staging.qcow2", 48),  # being converted now
        _scratch(processing.upload_path, 48),
        _scratch(staging / "3f1c0e1e-0000-4000-8000-000000000001.staging.qcow2", 1),  # too young to judge
        _scratch(staging / f"{processing.id}.qcow2", 48),  # the region's cached copy, not scratch
    ]
    removed = [
        _scratch(staging / f"{failed.id}.staging.qcow2", 48),
        _scratch(failed.upload_path, 48),
        _scratch(staging / "3f1c0e1e-0000-4000-8000-000000000002.staging.qcow2", 48),  # image deleted
        _scratch(uploads / "3f1c0e1e-0000-4000-8000-000000000003.upload", 48),
        _scratch(staging / "3f1c0e1e-0000-4000-8000-000000000004.qcow2.part", 48),  # a download cut off
    ]

    cleanup.sweep()

    assert [path for path in kept if not path.exists()] == []
    assert [path for path in removed if path.exists()] == []
    for path in kept:
        path.unlink()


def test_an_upload_nobody_finished_is_failed_with_the_reason_and_its_file_removed(prod, dha, settings):
    settings.IMAGE_SCRATCH_MAX_AGE_HOURS = 24
    stalled = _image(prod, dha, "stalled", Image.State.UPLOADING)
    _scratch(stalled.upload_path, 30)
    Image.objects.filter(pk=stalled.pk).update(updated_at=timezone.now() - timedelta(hours=30))
    arriving = _image(prod, dha, "arriving", Image.State.UPLOADING)
    _scratch(arriving.upload_path, 0)
    Image.objects.filter(pk=arriving.pk).update(updated_at=timezone.now() - timedelta(hours=30))

    cleanup.sweep()

    stalled.refresh_from_db()
    arriving.refresh_from_db()
    assert stalled.state == Image.State.FAILED and not stalled.upload_path.exists()
    assert (
        "no bytes arrived for 24 hours" in stalled.last_error
        and "upload the file again" in stalled.last_error
    )
    assert arriving.state == Image.State.UPLOADING and arriving.upload_path.exists()


def test_the_sweep_aborts_multipart_uploads_a_killed_worker_left(dha, image_stores):
    store = image_stores[dha.slug]
    # What a worker killed between two parts leaves behind: the parts stay stored, and billed, until aborted.
    started = store.client.create_multipart_upload(Bucket=store.bucket, Key="images/killed.qcow2")
    store.client.upload_part(
        Bucket=store.bucket,
        Key="images/killed.qcow2",
        UploadId=started["UploadId"],
        PartNumber=1,
        Body=b"x" * 100,
    )

    def pending():
        return store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])

    cleanup.sweep()
    assert len(pending()) == 1  # it may still be running: too young to judge

    cleanup.sweep(now=timezone.now() + timedelta(hours=25))
    assert pending() == []


def test_the_sweep_runs_from_beat():
    entry = next(
        entry
        for entry in django_settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "images.beat.sweep"
    )
    assert entry["schedule"] <= HOURS
    celery_app.loader.import_default_modules()  # what a worker loads: every app's tasks.py and beat.py
    assert "images.beat.sweep" in celery_app.tasks


class BrokenConnection:
    """A request body whose client goes away after the first megabyte."""

    def __init__(self):
        self.sent = 0

    def read(self, size=-1):
        if self.sent:
            raise OSError("connection reset by peer")
        self.sent = size
        return b"\xab" * size


def test_an_upload_cut_off_mid_way_leaves_no_partial_file(bob, prod, dha):
    image = services.start_import(actor=bob, project=prod, region=dha, name="golden", declared_format="raw")

    with pytest.raises(OSError, match="connection reset"):
        services.receive_upload(actor=bob, image=image, stream=BrokenConnection(), length=8 * 2**20)

    image.refresh_from_db()
    assert not image.upload_path.exists()
    assert image.state == Image.State.UPLOADING  # the file may be sent again
