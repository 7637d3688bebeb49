"""The project storage quota: snapshots (billed bytes) and custom images (stored bytes, and what an
import will store) share it; an import that would exceed it is refused before anything converts it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.urls import reverse

from clouddigit.audit.models import AuditEntry
from clouddigit.backends import volumes as volume_files
from clouddigit.errors import InvalidRequest, PermissionRefused
from images import services, storage
from images.models import Image
from snapshots import diagnosis
from snapshots import services as snapshots
from snapshots import work as snapshot_work
from snapshots.models import Snapshot

MiB, GiB, TiB = 2**20, 2**30, 2**40
FIX = "Free space, or ask an admin to raise the project's storage quota with a ticket"


@pytest.fixture
def upload(run, dha, image_stores):
    def call(actor, project, path, name="golden", **kwargs):
        image = services.start_import(
            actor=actor, project=project, region=dha, name=name, declared_format="qcow2"
        )
        with open(path, "rb") as stream:
            return run(
                services.receive_upload, actor=actor, image=image, stream=stream, length=path.stat().st_size
            )

    return call


def _compressed_qcow2(tmp_path: Path, size: int) -> Path:
    """A qcow2 whose every cluster holds data, compressed: tiny on disk, `size` bytes once converted."""
    raw = tmp_path / "full.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), str(size)], check=True)
    volume_files.write_pattern(raw, 0, size, 0xAB, fmt="raw")
    compressed = tmp_path / "compressed.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(compressed)], check=True
    )
    raw.unlink()
    return compressed


def _staging_files(region) -> list[Path]:
    return sorted((Path(region.volume_dir) / "images").glob("*.staging.qcow2"))


def test_a_tiny_compressed_qcow2_that_would_outgrow_the_quota_is_refused_before_converting(
    upload, alice, bob, prod, dha, tmp_path, settings, image_stores
):
    settings.PROJECT_STORAGE_QUOTA_BYTES = 32 * MiB
    compressed = _compressed_qcow2(tmp_path, 64 * MiB)
    assert compressed.stat().st_size < 2 * MiB

    with pytest.raises(storage.StorageQuotaExceeded) as refused:
        upload(bob, prod, compressed)

    message = str(refused.value)
    assert "64.0 MiB" in message and "32.0 MiB" in message and FIX in message
    image = Image.objects.get(name="golden")
    assert image.state == Image.State.FAILED and image.last_error == message
    assert not image.upload_path.exists() and not _staging_files(dha)
    assert image_stores["bd-dha-1"].list("images/") == []
    assert AuditEntry.objects.filter(action="image.import.upload", outcome="refused").exists()

    storage.raise_storage_quota(actor=alice, project=prod, limit_gib=1, ticket="OPS-7")
    image = upload(bob, prod, compressed)

    assert image.state == Image.State.AVAILABLE, image.last_error
    assert image.stored_bytes > 30 * compressed.stat().st_size  # what the quota had to expect
    assert storage.usage(prod).image_bytes == image.stored_bytes


def test_a_15_tib_disk_is_refused_under_the_default_quota_and_a_ticket_lets_it_through(
    run, alice, bob, prod, dha, tmp_path, django_capture_on_commit_callbacks
):
    huge = tmp_path / "huge.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(huge), "15T"], check=True)

    def receive(name):
        image = services.start_import(actor=bob, project=prod, region=dha, name=name, declared_format="qcow2")
        with open(huge, "rb") as stream:
            # The worker is not run: converting and checksumming 15 TiB is not this test's business.
            return services.receive_upload(actor=bob, image=image, stream=stream)

    with pytest.raises(storage.StorageQuotaExceeded, match=r"15\.0 TiB.*1\.0 TiB"):
        receive("huge")

    with pytest.raises(PermissionRefused):
        storage.raise_storage_quota(actor=bob, project=prod, limit_gib=16 * 1024, ticket="OPS-8")
    with pytest.raises(InvalidRequest, match="ticket"):
        storage.raise_storage_quota(actor=alice, project=prod, limit_gib=16 * 1024, ticket=" ")
    storage.raise_storage_quota(actor=alice, project=prod, limit_gib=16 * 1024, ticket="OPS-8")

    assert receive("huge").state == Image.State.PROCESSING
    entry = AuditEntry.objects.get(action="storage.quota.raise", outcome="success")
    assert entry.actor_name == "alice"
    used = storage.usage(prod)
    assert (used.image_bytes, used.limit_bytes, used.ticket) == (15 * TiB, 16 * TiB, "OPS-8")


def test_snapshots_count_their_billed_bytes_and_a_project_over_quota_takes_no_new_snapshot(
    run, alice, prod, data_volume, settings
):
    settings.PROJECT_STORAGE_QUOTA_BYTES = 2 * MiB
    first = run(snapshots.create_snapshot, actor=alice, volume=data_volume, name="before")
    data_volume.refresh_from_db()
    volume_files.write_pattern(data_volume.path, 0, 4 * MiB, 0x22)  # the snapshot now holds 4 MiB alone
    snapshot_work.measure(str(first.pk))

    assert storage.usage(prod).snapshot_bytes == 4 * MiB
    with pytest.raises(storage.StorageQuotaExceeded, match=r"4\.0 MiB of its 2\.0 MiB") as refused:
        snapshots.create_snapshot(actor=alice, volume=data_volume, name="after")
    assert FIX in str(refused.value)
    assert not Snapshot.objects.filter(name="after").exists()


def test_promote_and_copy_are_refused_when_the_result_would_exceed_the_quota(
    run, alice, prod, sandbox, data_volume, settings, golden
):
    settings.PROJECT_STORAGE_QUOTA_BYTES = 8 * MiB
    snapshot = run(snapshots.create_snapshot, actor=alice, volume=data_volume, name="data-snap")

    with pytest.raises(storage.StorageQuotaExceeded, match=r"16\.0 MiB"):
        services.promote_snapshot(actor=alice, snapshot=snapshot, name="data-image")

    Image.objects.filter(pk=golden.pk).update(stored_bytes=10 * MiB, sha256="0" * 64)
    golden.refresh_from_db()
    with pytest.raises(storage.StorageQuotaExceeded, match=r"10\.0 MiB"):
        services.copy_image(actor=alice, image=golden, project=sandbox)
    assert not Image.objects.filter(name__in=["data-image"]).exists()
    assert Image.objects.filter(name="golden").count() == 1


def test_diagnose_reads_the_project_quota(alice, prod, dha, data_volume, settings, golden):
    settings.PROJECT_STORAGE_QUOTA_BYTES = 8 * MiB
    snapshot = snapshots.create_snapshot(actor=alice, volume=data_volume, name="waiting")
    assert snapshot.state == Snapshot.State.CREATING  # no worker here
    Image.objects.filter(pk=golden.pk).update(stored_bytes=9 * MiB)  # then the project filled up

    findings = [finding for finding in diagnosis.diagnose(snapshot) if finding.cause == "Storage quota hit"]

    assert len(findings) == 1
    assert "acme/prod uses 9.0 MiB of its 8.0 MiB storage quota" in findings[0].detail


def test_the_console_shows_storage_used_against_the_quota(client, alice, prod, dha, golden):
    Image.objects.filter(pk=golden.pk).update(stored_bytes=3 * GiB)
    client.force_login(alice)

    for url in (reverse("images:catalogue"), reverse("snapshots:list")):
        page = client.get(url).content.decode()
        assert "3.0 GiB of 1.0 TiB" in page, url


def test_retrying_a_failed_image_reserves_its_size_again(alice, prod, dha, settings):
    settings.PROJECT_STORAGE_QUOTA_BYTES = 8 * MiB
    failed = Image.objects.create(
        project=prod,
        region=dha,
        name="data-image",
        source=Image.Source.SNAPSHOT,
        virtual_size=16 * MiB,
        state=Image.State.FAILED,
        created_by="alice",
    )

    with pytest.raises(storage.StorageQuotaExceeded, match=r"16\.0 MiB"):
        services.retry_image(actor=alice, image=failed)
    failed.refresh_from_db()
    assert failed.state == Image.State.FAILED
