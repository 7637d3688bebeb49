"""No web request runs qemu-img (issue 11): creating a VM from an image, creating and resizing a volume,
and the VM, volume and snapshot pages only write rows and queue the hypervisor worker, whose steps
then make the files. Every qemu-img run goes through `clouddigit.backends.volumes._run`, which fails
here while a request is answered."""

from __future__ import annotations

import shutil

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from clouddigit.backends import volumes
from clouddigit.compute.models import VM, Volume
from images import files
from images.models import Image
from snapshots import services as snapshots

MiB, GiB = 2**20, 2**30


@pytest.fixture
def in_request(alice, client, monkeypatch, django_capture_on_commit_callbacks):
    """Answer one request (`call(client)`) with qemu-img forbidden; then run what it queued, as the
    region's worker would, with qemu-img allowed. Returns the response."""
    real_run = volumes._run
    api = APIClient()
    api.force_authenticate(alice)
    client.force_login(alice)

    def forbidden(args, *rest, **kwargs):
        raise AssertionError(f"a web request ran {' '.join(args[:2])}")

    def call(request):
        monkeypatch.setattr(volumes, "_run", forbidden)
        try:
            with django_capture_on_commit_callbacks() as queued:
                response = request(api, client)
        finally:
            monkeypatch.setattr(volumes, "_run", real_run)
        while queued:  # the worker: each step, and what it queues in turn
            with django_capture_on_commit_callbacks() as more:
                queued.pop(0)()
            queued.extend(more)
        return response

    return call


@pytest.fixture
def golden(prod, dha, qcow2_file):
    """An available image of acme/prod whose file the region already holds (its 1 MiB of 0xAB data)."""
    image = Image.objects.create(
        project=prod,
        region=dha,
        name="golden",
        created_by="alice",
        state=Image.State.AVAILABLE,
        virtual_size=64 * MiB,
    )
    files.cache_path(image).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(qcow2_file(), files.cache_path(image))
    return image


VM_BODY = {"project": "acme/prod", "region": "bd-dha-1", "flavor": "std-2x4", "vpc": "v", "image": "golden"}


def test_vm_launch_over_the_api_copies_the_image_on_the_worker(in_request, golden):
    response = in_request(
        lambda api, _: api.post("/api/v1/compute/vms/", {**VM_BODY, "name": "web-1"}, format="json")
    )

    assert response.status_code == 202, response.json()
    assert response.json()["state"] == "creating"
    vm = VM.objects.get(pk=response.json()["id"])
    boot = vm.volumes.get()
    assert (vm.state, boot.state, boot.device) == ("running", "attached", "vda")
    assert volumes.read_bytes(boot.path, 0, MiB) == b"\xab" * MiB
    assert volumes.info(boot.path)["virtual-size"] == 64 * MiB
    assert boot.backing_chain and boot.chain_recorded_at is not None


def test_vm_launch_from_the_console_then_its_page_and_the_volume_and_snapshot_pages(
    in_request, golden, run, alice
):
    form = {**VM_BODY, "image": str(golden.pk), "name": "web-2", "boot_gib": "1", "tags": ""}
    response = in_request(lambda _, client: client.post(reverse("images:launch"), form))

    assert response.status_code == 302
    vm = VM.objects.get(name="web-2")
    assert vm.state == "stopped"  # "Start now" unticked
    boot = vm.volumes.get()
    assert volumes.info(boot.path)["virtual-size"] == GiB
    snapshot = run(snapshots.create_snapshot, actor=alice, vm=vm, name="snap-1")

    for url in (
        reverse("compute:vm-detail", args=[vm.pk]),
        reverse("compute:vm-list"),
        reverse("compute:volume-detail", args=[boot.pk]),
        reverse("compute:volume-list"),
        reverse("snapshots:detail", args=[snapshot.pk]),
    ):
        assert in_request(lambda _, client, url=url: client.get(url)).status_code == 200, url


def test_volume_create_and_resize_over_the_api_and_the_console(in_request, prod, dha):
    created = in_request(
        lambda api, _: api.post(
            "/api/v1/compute/volumes/",
            {"project": "acme/prod", "name": "data-1", "size_gib": 1},
            format="json",
        )
    )
    assert created.status_code == 202 and created.json()["state"] == "creating"
    volume = Volume.objects.get(name="data-1")
    assert volume.state == "available" and volumes.info(volume.path)["virtual-size"] == GiB

    resized = in_request(
        lambda api, _: api.post(
            f"/api/v1/compute/volumes/{volume.pk}/resize/", {"size_gib": 2}, format="json"
        )
    )
    assert resized.status_code == 202 and resized.json()["state"] == "resizing"
    assert volumes.info(volume.path)["virtual-size"] == 2 * GiB

    form = {"project": "acme/prod", "region": "bd-dha-1", "name": "data-2", "size_gib": "1", "tags": ""}
    assert (
        in_request(lambda _, client: client.post(reverse("compute:volume-create"), form)).status_code == 302
    )
    console = Volume.objects.get(name="data-2")
    assert console.state == "available" and volumes.info(console.path)["virtual-size"] == GiB

    url = reverse("compute:volume-resize", args=[console.pk])
    assert in_request(lambda _, client: client.post(url, {"size_gib": "3"})).status_code == 302
    console.refresh_from_db()
    assert (console.state, console.size_bytes) == ("available", 3 * GiB)
    assert volumes.info(console.path)["virtual-size"] == 3 * GiB
