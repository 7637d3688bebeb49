"""Custom images end to end through the services: real qemu-img files, a real S3 server (SeaweedFS),
the libvirt test driver for VMs created from images."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from clouddigit.backends import hypervisor
from clouddigit.backends import volumes as volume_files
from clouddigit.backends.chainlock import ChainBusy
from clouddigit.compute import services as compute
from clouddigit.compute import work as compute_work
from clouddigit.errors import Conflict, InvalidRequest, PermissionRefused
from iam.services import grant_role
from images import files, launch, services
from images.errors import ImagePromoteFailed, ImageQuotaExceeded, ImageUploadFailed
from images.models import Image
from snapshots import chains
from snapshots import services as snapshots
from tests.worker import created

MiB = 2**20


@pytest.fixture
def upload(run, dha, image_stores):
    """Import a file as `actor` into `project`: start, stream the bytes, let the worker store them."""

    def call(actor, project, path, fmt="qcow2", name="golden", region=None, **kwargs):
        image = services.start_import(
            actor=actor, project=project, region=region or dha, name=name, declared_format=fmt, **kwargs
        )
        with open(path, "rb") as stream:
            return run(
                services.receive_upload, actor=actor, image=image, stream=stream, length=path.stat().st_size
            )

    return call


def _convert(src, fmt, dst, *options):
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", fmt, *options, str(src), str(dst)], check=True
    )
    return dst


def test_import_qcow2_is_stored_with_server_verified_checksums(upload, bob, prod, qcow2_file, image_stores):
    source = qcow2_file()

    image = upload(bob, prod, source, tags={"os-family": "ubuntu", "cis-level": "1"})

    assert image.state == Image.State.AVAILABLE, image.last_error
    assert image.detected_format == "qcow2" and image.virtual_size == 64 * MiB
    assert image.guest_sha256 == volume_files.checksum(source)
    stored = image_stores["bd-dha-1"].head(image.object_key)
    assert stored["sha256"] == image.sha256 and stored["size"] == image.stored_bytes
    assert files.cache_path(image).exists() and not image.upload_path.exists()
    assert image.tags["owner"] == "bob" and image.tags["created-at"] == timezone.now().strftime("%Y-%m-%d")
    assert image.missing_tags == []


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("raw", []),
        ("vmdk", ["-o", "subformat=streamOptimized"]),
        ("vpc", ["-o", "subformat=fixed"]),
        ("vhdx", []),
    ],
)
def test_other_formats_are_converted_to_qcow2_with_the_same_guest_bytes(
    upload, bob, prod, qcow2_file, tmp_path, fmt, options
):
    source = qcow2_file()
    converted = _convert(source, fmt, tmp_path / f"disk.{fmt}", *options)
    declared = {"vpc": "vhd"}.get(fmt, fmt)

    image = upload(bob, prod, converted, fmt=declared)

    assert image.state == Image.State.AVAILABLE, image.last_error
    assert image.detected_format == declared
    # A VHD's size is rounded to its disk geometry; the data written is what must survive.
    assert volume_files.read_bytes(files.cache_path(image), 0, MiB) == b"\xab" * MiB
    if fmt != "vpc":
        assert image.guest_sha256 == volume_files.checksum(source)


def test_vmdk_declared_as_qcow2_is_refused_with_the_spec_text(upload, bob, prod, qcow2_file, tmp_path):
    vmdk = _convert(qcow2_file("source.qcow2"), "vmdk", tmp_path / "disk.qcow2")  # named .qcow2 on purpose

    with pytest.raises(ImageUploadFailed) as refused:
        upload(bob, prod, vmdk, fmt="qcow2")

    assert str(refused.value) == "ImageUploadFailed: format 'qcow2' but file has VMDK signature"
    image = Image.objects.get(name="golden")
    assert image.state == Image.State.FAILED and image.last_error == str(refused.value)
    assert "qemu-img info" in image.hint and "--format vmdk" in image.hint
    assert not image.upload_path.exists()
    # The name is free again: the next upload replaces the failed image.
    assert upload(bob, prod, vmdk, fmt="vmdk").state == Image.State.AVAILABLE


def test_qcow2_with_a_backing_file_is_refused_before_qemu_img_opens_it(upload, bob, prod, tmp_path):
    base = tmp_path / "base.raw"
    base.write_bytes(b"secret" * 1000)
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay)], check=True
    )

    with pytest.raises(ImageUploadFailed, match="backing file"):
        upload(bob, prod, overlay)


def test_uploads_over_the_size_limit_are_refused(upload, bob, prod, qcow2_file, settings, dha):
    settings.IMAGE_MAX_UPLOAD_BYTES = 100_000
    with pytest.raises(ImageUploadFailed, match="limited to"):
        services.start_import(
            actor=bob, project=prod, region=dha, name="big", declared_format="raw", size_bytes=10**6
        )
    with pytest.raises(ImageUploadFailed, match="limited to"):
        upload(bob, prod, qcow2_file())  # the announced size is checked before a byte is written


def test_a_header_claiming_a_huge_disk_is_refused(upload, bob, prod, tmp_path):
    huge = tmp_path / "huge.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", str(huge), "64P"], check=True
    )
    with pytest.raises(ImageUploadFailed, match="at most 16 TiB"):
        upload(bob, prod, huge)


def test_a_short_upload_is_refused(run, bob, prod, dha, qcow2_file, image_stores):
    image = services.start_import(actor=bob, project=prod, region=dha, name="short", declared_format="qcow2")
    source = qcow2_file()
    with open(source, "rb") as stream, pytest.raises(ImageUploadFailed, match="stopped after"):
        services.receive_upload(actor=bob, image=image, stream=stream, length=source.stat().st_size + 10)


def test_publishers_upload_only_in_their_project(bob, sandbox, dha):
    with pytest.raises(PermissionRefused, match="publish_images"):
        services.start_import(actor=bob, project=sandbox, region=dha, name="x", declared_format="qcow2")


def test_quota_is_50_custom_images_per_project_and_raised_with_a_ticket(alice, bob, prod, dha):
    Image.objects.bulk_create(
        Image(project=prod, region=dha, name=f"img-{n}", created_by="t", state=Image.State.AVAILABLE)
        for n in range(50)
    )
    with pytest.raises(ImageQuotaExceeded, match=r"50 custom images \(limit 50\)"):
        services.start_import(actor=bob, project=prod, region=dha, name="one-more", declared_format="raw")
    with pytest.raises(PermissionRefused):
        services.raise_image_limit(actor=bob, project=prod, limit=60, ticket="OPS-1")
    with pytest.raises(InvalidRequest, match="ticket"):
        services.raise_image_limit(actor=alice, project=prod, limit=60, ticket=" ")

    services.raise_image_limit(actor=alice, project=prod, limit=60, ticket="OPS-1")

    assert (
        services.start_import(
            actor=bob, project=prod, region=dha, name="one-more", declared_format="raw"
        ).state
        == Image.State.UPLOADING
    )


# --- Promote and copy --------------------------------------------------------------------------------


def test_promote_volume_snapshot_to_image(run, alice, data_volume, image_stores):
    snapshot = run(snapshots.create_snapshot, actor=alice, volume=data_volume, name="data-snap")
    data_volume.refresh_from_db()  # it writes to a new overlay now
    volume_files.write_pattern(data_volume.path, 0, MiB, 0x22)  # the volume moves on; the image must not

    image = run(services.promote_snapshot, actor=alice, snapshot=snapshot, name="data-image")

    assert image.state == Image.State.AVAILABLE, image.last_error
    assert image.source == Image.Source.SNAPSHOT
    assert image.guest_sha256 == snapshot.disks.get().checksum
    assert volume_files.read_bytes(files.cache_path(image), 0, 4) == b"\x11" * 4


def test_promoting_a_snapshot_waits_for_a_job_changing_its_chain_and_says_which(
    run, alice, data_volume, image_stores, settings
):
    settings.VOLUME_CHAIN_WAIT_SECONDS = 0.2
    snapshot = run(snapshots.create_snapshot, actor=alice, volume=data_volume, name="data-snap")

    with chains.locked(data_volume, purpose="deleting snapshot data-older"), pytest.raises(ChainBusy):
        run(services.promote_snapshot, actor=alice, snapshot=snapshot, name="data-image")

    image = Image.objects.get(name="data-image")
    assert image.state == Image.State.FAILED
    assert image.last_error.startswith("Volume chain busy: deleting snapshot data-older (since ")
    assert not files.cache_path(image).exists()


def test_promote_multi_volume_snapshot_is_refused(run, alice, prod, make_vm, dha, image_stores):
    vm = make_vm(prod, "db-01")
    data = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="db-data", size_bytes=16 * MiB)
    )
    compute.attach_volume(actor=None, volume=data, vm=vm, device="vdb")
    snapshot = run(snapshots.create_snapshot, actor=alice, vm=vm, name="db-snap")

    with pytest.raises(ImagePromoteFailed) as refused:
        services.promote_snapshot(actor=alice, snapshot=snapshot, name="db-image")

    assert str(refused.value).startswith("ImagePromoteFailed: snapshot has multiple volumes attached")
    assert "--device vda" in str(refused.value)
    image = run(services.promote_snapshot, actor=alice, snapshot=snapshot, name="db-image", device="vda")
    assert image.state == Image.State.AVAILABLE and image.virtual_size == 2**30


def test_copy_to_another_region_keeps_the_checksum(run, upload, alice, prod, ctg, qcow2_file, image_stores):
    image = upload(alice, prod, qcow2_file())

    copy = run(services.copy_image, actor=alice, image=image, region=ctg)

    assert copy.state == Image.State.AVAILABLE, copy.last_error
    assert (copy.region_id, copy.sha256, copy.name) == ("bd-ctg-1", image.sha256, image.name)
    assert image_stores["bd-ctg-1"].head(copy.object_key)["sha256"] == image.sha256
    with pytest.raises(InvalidRequest, match="already in"):
        services.copy_image(actor=alice, image=image, region=image.region)


# --- Sharing, visibility, deprecation and the picker -------------------------------------------------


def test_sharing_needs_image_admin_and_stays_in_the_account(alice, bob, golden, sandbox, globex_main):
    with pytest.raises(PermissionRefused, match="share_images"):
        services.share_image(actor=bob, image=golden, project=sandbox)
    with pytest.raises(InvalidRequest, match="not yet supported") as refused:
        services.share_image(actor=alice, image=golden, project=globex_main)
    assert refused.value.code == "NotYetSupported"

    services.share_image(actor=alice, image=golden, project=sandbox)

    assert list(Image.objects.offered_to(sandbox)) == [golden]


def test_picker_offers_own_shared_and_org_shared_images(alice, golden, sandbox, dha, ctg):
    assert list(launch.picker(alice, sandbox, dha)) == []
    [reason] = launch.why_missing(alice, sandbox, dha, "golden")
    assert "not shared with acme/sandbox" in reason.reason and "Share" in reason.fix

    services.set_visibility(actor=alice, image=golden, visibility=Image.Visibility.ACCOUNT)
    assert list(launch.picker(alice, sandbox, dha)) == [golden]

    [reason] = launch.why_missing(alice, sandbox, ctg, str(golden.id))
    assert "region bd-dha-1" in reason.reason and "Copy it to bd-ctg-1" in reason.fix


def test_deprecated_images_are_hidden_unless_asked_for(alice, golden, prod, dha):
    services.deprecate_image(actor=alice, image=golden, note="Use golden-v2.")
    assert list(launch.picker(alice, prod, dha)) == []
    assert list(launch.picker(alice, prod, dha, show_deprecated=True)) == [golden]
    [reason] = launch.why_missing(alice, prod, dha, "golden")
    assert "deprecated" in reason.reason and "--show-deprecated" in reason.fix

    services.undeprecate_image(actor=alice, image=golden)
    assert list(launch.picker(alice, prod, dha)) == [golden]


def test_why_missing_names_every_reason_at_once(alice, golden, prod, ctg):
    services.deprecate_image(actor=alice, image=golden)

    reasons = [reason.reason for reason in launch.why_missing(alice, prod, ctg, "golden")]

    assert len(reasons) == 2 and "deprecated" in reasons[0] and "region bd-dha-1" in reasons[1]


def test_deprecation_at_a_future_time(alice, golden, prod, dha):
    services.deprecate_image(actor=alice, image=golden, at=timezone.now() + timedelta(days=7))
    assert list(launch.picker(alice, prod, dha)) == [golden]


def test_org_shared_image_without_image_viewer_is_explained(django_user_model, alice, golden, sandbox, dha):
    services.set_visibility(actor=alice, image=golden, visibility=Image.Visibility.ACCOUNT)
    django_user_model.objects.create_user("dora")
    grant_role(
        actor=None, role="snapshot.operator", account=sandbox.account, project=sandbox, username="dora"
    )
    dora = django_user_model.objects.get(username="dora")

    assert list(launch.picker(dora, sandbox, dha)) == []
    [reason] = launch.why_missing(dora, sandbox, dha, "golden")
    assert "image.viewer" in reason.reason and "bind image.viewer" in reason.fix


def test_why_missing_never_looks_into_other_accounts(charlie, golden, globex_main, dha):
    [reason] = launch.why_missing(charlie, globex_main, dha, "golden")
    assert reason.image is None and "No image named 'golden'" in reason.reason


# --- VM create from an image -------------------------------------------------------------------------


def test_create_a_vm_from_an_image(run, upload, alice, prod, dha, qcow2_file):
    image = upload(alice, prod, qcow2_file())

    vm = run(
        launch.launch_vm,
        actor=alice,
        project=prod,
        region=dha,
        image=image,
        name="web-01",
        flavor="std-2x4",
        vpc="vpc-1",
        boot_size_bytes=2 * 2**30,
    )

    boot = vm.volumes.get()
    assert boot.bootable and boot.size_bytes == 2 * 2**30
    assert volume_files.info(boot.path)["virtual-size"] == 2 * 2**30
    assert volume_files.read_bytes(boot.path, 0, MiB) == b"\xab" * MiB
    assert hypervisor.state(vm.host.libvirt_uri, compute_work.domain_spec(vm)) == "stopped"


def test_vm_create_refuses_an_image_from_another_project_with_the_reason(alice, golden, sandbox, dha):
    with pytest.raises(InvalidRequest, match="not shared with acme/sandbox"):
        launch.launch_vm(
            actor=alice, project=sandbox, region=dha, image=golden, name="x", flavor="std-2x4", vpc="v"
        )


def test_changed_bytes_in_the_object_store_are_caught(
    run, upload, alice, prod, dha, qcow2_file, image_stores
):
    image = upload(alice, prod, qcow2_file())
    files.cache_path(image).unlink()  # as on a host that has not fetched it yet
    image_stores["bd-dha-1"].put_bytes(image.object_key, b"not the image")

    with pytest.raises(Exception, match="SHA-256"):
        launch.launch_vm(
            actor=alice, project=prod, region=dha, image=image, name="x", flavor="std-2x4", vpc="v"
        )


def test_copy_into_another_project_of_the_account(run, upload, alice, prod, sandbox, globex_main, qcow2_file):
    image = upload(alice, prod, qcow2_file())

    copy = run(services.copy_image, actor=alice, image=image, project=sandbox)

    assert copy.state == Image.State.AVAILABLE, copy.last_error
    assert (copy.project, copy.region_id, copy.sha256) == (sandbox, image.region_id, image.sha256)
    assert list(launch.picker(alice, sandbox, image.region)) == [copy]
    with pytest.raises(InvalidRequest, match="not yet supported"):
        services.copy_image(actor=alice, image=image, project=globex_main)


def test_publishers_copy_only_into_projects_they_publish_in(upload, bob, prod, sandbox, qcow2_file):
    image = upload(bob, prod, qcow2_file())
    with pytest.raises(PermissionRefused, match="copy images into it"):
        services.copy_image(actor=bob, image=image, project=sandbox)


def test_copy_between_regions_on_separate_s3_servers(
    run, upload, alice, prod, ctg, qcow2_file, seaweed, settings, tmp_path
):
    """The embedded default runs one SeaweedFS per region: the copy goes through a download and a
    checksum-verified upload instead of a server-side copy."""
    from clouddigit.backends.objectstore import ObjectStore
    from clouddigit.backends.seaweed import PORTS_PER_SERVER, SeaweedServer

    image = upload(alice, prod, qcow2_file())
    server = SeaweedServer(tmp_path / "ctg-s3", seaweed.port_base + PORTS_PER_SERVER, "ctg-key", "ctg-secret")
    server.start()
    try:
        server.wait_ready(timeout=30)
        store = ObjectStore(server.endpoint, "ctg-key", "ctg-secret", "ctg-images")
        store.ensure_bucket()
        settings.REGIONS = {
            **settings.REGIONS,
            "bd-ctg-1": {
                **settings.REGIONS["bd-ctg-1"],
                "s3_endpoint": server.endpoint,
                "s3_bucket": "ctg-images",
                "s3_access_key": "ctg-key",
                "s3_secret_key": "ctg-secret",
            },
        }

        copy = run(services.copy_image, actor=alice, image=image, region=ctg)

        assert copy.state == Image.State.AVAILABLE, copy.last_error
        assert store.head(copy.object_key)["sha256"] == image.sha256
    finally:
        server.stop()


def test_an_import_whose_worker_was_lost_is_retried_or_deleted(run, bob, prod, dha, qcow2_file, image_stores):
    """A worker killed mid-import leaves the image processing: its owner may retry it or delete it."""
    path = qcow2_file()
    image = services.start_import(actor=bob, project=prod, region=dha, name="golden", declared_format="qcow2")
    with open(path, "rb") as stream:  # the worker's task is lost: not run
        services.receive_upload(actor=bob, image=image, stream=stream, length=path.stat().st_size)
    Image.objects.filter(pk=image.pk).update(claimed_by="worker-1:4242", lease_until=timezone.now())
    image = run(services.retry_image, actor=bob, image=Image.objects.get(pk=image.pk))
    assert image.state == Image.State.AVAILABLE and image.sha256

    second = services.start_import(actor=bob, project=prod, region=dha, name="other", declared_format="qcow2")
    with open(path, "rb") as stream:
        services.receive_upload(actor=bob, image=second, stream=stream, length=path.stat().st_size)
    services.delete_image(actor=bob, image=Image.objects.get(pk=second.pk))
    assert not Image.objects.filter(pk=second.pk).exists() and not second.upload_path.exists()


def test_an_image_a_live_worker_is_processing_is_not_deleted_under_it(
    bob, prod, dha, qcow2_file, image_stores
):
    path = qcow2_file()
    image = services.start_import(actor=bob, project=prod, region=dha, name="golden", declared_format="qcow2")
    with open(path, "rb") as stream:
        services.receive_upload(actor=bob, image=image, stream=stream, length=path.stat().st_size)
    Image.objects.filter(pk=image.pk).update(
        claimed_by="worker-1:4242", lease_until=timezone.now() + timedelta(minutes=1)
    )
    with pytest.raises(Conflict, match="being processed now"):
        services.delete_image(actor=bob, image=Image.objects.get(pk=image.pk))
    assert Image.objects.filter(pk=image.pk).exists()
