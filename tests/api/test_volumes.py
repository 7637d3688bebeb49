"""The volume lifecycle over the REST API: each call is one service call, and each refusal a 4xx with
{"code", "message", "field"} that changed nothing and is in the audit log."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from clouddigit.audit.models import AuditEntry
from clouddigit.compute import services as compute
from clouddigit.compute.models import Volume
from snapshots import services as snapshots
from tests.worker import created

VOLUMES = "/api/v1/compute/volumes/"


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def post(django_capture_on_commit_callbacks):
    """POST as `user`, with what the request queued run on commit (eagerly), as on a server."""

    def call(user, path, body=None):
        with django_capture_on_commit_callbacks(execute=True):
            return api(user).post(path, body or {}, format="json")

    return call


@pytest.fixture
def spare(post, alice, prod, dha):
    response = post(alice, VOLUMES, {"project": "acme/prod", "name": "spare-01", "size_gib": 3})
    assert response.status_code == 202, response.json()
    assert response.json()["state"] == "creating"  # the worker makes the file (run here on commit)
    return Volume.objects.get(pk=response.json()["id"])


def test_create_attach_detach_resize_delete(
    post, alice, spare, make_vm, prod, django_capture_on_commit_callbacks
):
    make_vm(prod, "web-02")
    assert (spare.size_bytes, spare.state) == (3 * 2**30, "available")

    attached = post(alice, f"{VOLUMES}{spare.pk}/attach/", {"vm": "web-02"})
    assert attached.status_code == 200, attached.json()
    assert (attached.json()["vm_name"], attached.json()["device"]) == ("web-02", "vdb")

    detached = post(alice, f"{VOLUMES}{spare.pk}/detach/")
    assert detached.status_code == 202 and detached.json()["state"] == "detaching"
    assert api(alice).get(f"{VOLUMES}{spare.pk}/").json()["state"] == "available"

    resized = post(alice, f"{VOLUMES}{spare.pk}/resize/", {"size_gib": 4})
    assert resized.status_code == 202, resized.json()
    assert (resized.json()["state"], resized.json()["resize_to_bytes"]) == ("resizing", 4 * 2**30)
    after = api(alice).get(f"{VOLUMES}{spare.pk}/").json()
    assert (after["state"], after["size_bytes"], after["resize_to_bytes"]) == ("available", 4 * 2**30, None)

    with django_capture_on_commit_callbacks(execute=True):
        deleted = api(alice).delete(f"{VOLUMES}{spare.pk}/?confirm=spare-01")
    assert deleted.status_code == 202 and deleted.json()["state"] == "deleting"
    assert api(alice).get(f"{VOLUMES}{spare.pk}/").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x" * 10_000, "size_gib": 1}, "name"),
        ({"name": "neg", "size_gib": -1}, "size_gib"),
        ({"name": "huge", "size_gib": 10**12}, "size_gib"),
    ],
)
def test_bad_creates_are_400_and_audited(post, alice, prod, dha, body, field):
    response = post(alice, VOLUMES, {"project": "acme/prod", **body})

    assert response.status_code == 400 and response.json()["field"] == field
    assert not Volume.objects.exists()
    assert AuditEntry.objects.filter(action="compute.volume.create", outcome="refused").exists()


def test_attach_to_a_vm_of_another_project_is_404_and_audited(post, alice, spare, make_vm, sandbox):
    other = make_vm(sandbox, "dev-01")

    response = post(alice, f"{VOLUMES}{spare.pk}/attach/", {"vm": str(other.pk)})

    assert response.status_code == 404 and response.json()["code"] == "NotFound"
    assert Volume.objects.get(pk=spare.pk).vm is None
    assert AuditEntry.objects.filter(action="api.volume.attach", outcome="refused").exists()


def test_an_outsider_cannot_see_the_volume(post, charlie, spare):
    assert post(charlie, f"{VOLUMES}{spare.pk}/detach/").status_code == 404
    assert api(charlie).delete(f"{VOLUMES}{spare.pk}/?confirm=spare-01").status_code == 404


def test_shrink_is_400_with_what_to_do(post, alice, spare):
    response = post(alice, f"{VOLUMES}{spare.pk}/resize/", {"size_gib": 1})

    assert response.status_code == 400
    assert "volumes only grow" in response.json()["message"]


def test_delete_of_a_volume_with_snapshots_asks_keep_or_delete(run, alice, spare):
    run(snapshots.create_snapshot, actor=alice, volume=spare, name="snap-1")

    response = api(alice).delete(f"{VOLUMES}{spare.pk}/?confirm=spare-01")

    assert response.status_code == 400
    assert response.json() == {
        "code": "SnapshotsNeedChoice",
        "message": "Volume spare-01 has 1 snapshot: choose to keep them (they still restore to new volumes) "
        "or to delete them with the volume.",
        "field": "snapshots",
    }


def test_restore_names_the_disk_by_device(run, post, alice, make_vm, prod, dha):
    vm = make_vm(prod, "db-01")
    data = created(
        compute.create_empty_volume(actor=alice, project=prod, region=dha, name="db-data", size_gib=1)
    )
    post(alice, f"{VOLUMES}{data.pk}/attach/", {"vm": "db-01"})
    snapshot = run(snapshots.create_snapshot, actor=alice, vm=vm, name="db-snap")

    response = post(
        alice, f"/api/v1/compute/snapshots/{snapshot.pk}/restore/", {"name": "inspect", "disk": "vdb"}
    )

    assert response.status_code == 202, response.json()
    restored = Volume.objects.get(name="inspect")
    assert restored.size_bytes == 2**30 and restored.state == "available"
    unknown = post(alice, f"/api/v1/compute/snapshots/{snapshot.pk}/restore/", {"name": "x", "disk": "vdq"})
    assert unknown.status_code == 400 and "vda (db-01-boot), vdb (db-data)" in unknown.json()["message"]
