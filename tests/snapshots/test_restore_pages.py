"""Retry and delete of a failed snapshot operation, and of a failed or lost restore, from the snapshot's page
(where its restores are listed)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from clouddigit.audit.models import AuditEntry
from clouddigit.compute.models import VM, Volume
from iam.services import grant_role
from snapshots import services, work
from snapshots.models import Restore, Snapshot

HOST_GONE = "the hypervisor host went away mid-copy"


@pytest.fixture
def taken(make_vm, prod, run) -> Snapshot:
    vm = make_vm(prod, "db-01")
    return run(services.create_snapshot, actor=None, vm=VM.objects.get(pk=vm.pk), name="db-01-nightly")


@pytest.fixture
def viewer(django_user_model, prod):
    django_user_model.objects.create_user("vic")
    grant_role(actor=None, role="snapshot.viewer", account=prod.account, project=prod, username="vic")
    return django_user_model.objects.get(username="vic")


def _restore(snapshot: Snapshot, name: str, **fields) -> Restore:
    """A restore to a new volume whose task never ran (no worker picks up the queued step here)."""
    restore = services.restore_to_volume(actor=None, snapshot=snapshot, name=name)
    Restore.objects.filter(pk=restore.pk).update(**fields)
    return Restore.objects.get(pk=restore.pk)


def _failed(snapshot: Snapshot, name: str = "db-01-copy") -> Restore:
    restore = _restore(snapshot, name)
    work.fail_restore(str(restore.pk), HOST_GONE)
    return Restore.objects.get(pk=restore.pk)


def _page(client, snapshot: Snapshot) -> str:
    return client.get(reverse("snapshots:detail", args=[snapshot.pk])).content.decode()


def _urls(restore: Restore) -> tuple[str, str]:
    return (
        reverse("snapshots:restore-retry", args=[restore.pk]),
        reverse("snapshots:restore-delete", args=[restore.pk]),
    )


def test_a_failed_restore_shows_why_and_its_owner_retries_it(
    client, alice, taken, django_capture_on_commit_callbacks
):
    restore = _failed(taken)
    retry_url, delete_url = _urls(restore)
    client.force_login(alice)
    page = _page(client, taken)
    assert HOST_GONE in page
    assert f'action="{retry_url}"' in page
    assert f'hx-post="{delete_url}" hx-confirm="Delete the failed restore to db-01-copy' in page

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(retry_url)
    assert response["Location"] == reverse("snapshots:detail", args=[taken.pk]) + "#restores"
    restore.refresh_from_db()
    assert (restore.state, restore.last_error) == (Restore.State.DONE, "")
    page = _page(client, taken)
    assert retry_url not in page and delete_url not in page and HOST_GONE not in page
    assert AuditEntry.objects.filter(action="snapshot.restore.retry", outcome="success").exists()


def test_deleting_a_failed_restore_removes_the_volume_it_began(client, alice, taken):
    restore = _failed(taken)
    _, delete_url = _urls(restore)
    client.force_login(alice)
    asked = client.post(delete_url)  # without JavaScript a page asks first
    assert "Delete the failed restore to db-01-copy?" in asked.content.decode()
    assert Restore.objects.filter(pk=restore.pk).exists()
    response = client.post(delete_url, {"confirmed": "yes"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 204
    assert response["HX-Location"] == reverse("snapshots:detail", args=[taken.pk]) + "#restores"
    assert not Restore.objects.filter(pk=restore.pk).exists()
    assert not Volume.objects.filter(name="db-01-copy").exists()
    assert "Deleted the failed restore to db-01-copy" in _page(client, taken)


def test_a_lost_restore_offers_retry_but_not_delete(client, alice, taken):
    lost = _restore(
        taken, "db-01-lost", claimed_by="host:1:abc", lease_until=timezone.now() - timedelta(minutes=2)
    )
    queued = _restore(taken, "db-01-queued")  # the queue answers for it: nothing to offer yet
    client.force_login(alice)
    page = _page(client, taken)
    assert _urls(lost)[0] in page and _urls(lost)[1] not in page
    assert _urls(queued)[0] not in page and _urls(queued)[1] not in page
    assert "its worker stopped answering" in page


def test_a_viewer_sees_the_reason_but_no_buttons_and_is_refused(client, viewer, taken):
    restore = _failed(taken)
    retry_url, delete_url = _urls(restore)
    client.force_login(viewer)
    page = _page(client, taken)
    assert HOST_GONE in page and retry_url not in page and delete_url not in page
    refused = client.post(retry_url, follow=True)
    assert "You may not retry restores" in refused.content.decode()
    assert Restore.objects.get(pk=restore.pk).state == Restore.State.FAILED
    assert AuditEntry.objects.filter(
        actor_name="vic", action="snapshot.restore.retry", outcome="refused"
    ).exists()


def test_an_outsider_gets_404_for_a_restore(client, charlie, taken):
    restore = _failed(taken)
    client.force_login(charlie)
    for url in _urls(restore):
        assert client.post(url).status_code == 404
    assert Restore.objects.filter(pk=restore.pk, state=Restore.State.FAILED).exists()


def test_a_failed_snapshot_shows_why_and_only_its_owner_may_retry_it(
    client, alice, viewer, make_vm, prod, django_capture_on_commit_callbacks
):
    vm = make_vm(prod, "db-02")
    snapshot = services.create_snapshot(actor=None, vm=VM.objects.get(pk=vm.pk), name="db-02-nightly")
    work.fail(str(snapshot.pk), "qemu-img: Could not create overlay: No space left on device")
    retry_url = reverse("snapshots:retry", args=[snapshot.pk])
    client.force_login(viewer)
    page = _page(client, snapshot)
    assert "No space left on device" in page and retry_url not in page
    client.force_login(alice)
    page = _page(client, snapshot)
    assert "No space left on device" in page and f'action="{retry_url}"' in page

    with django_capture_on_commit_callbacks(execute=True):
        client.post(retry_url)
    snapshot.refresh_from_db()
    assert (snapshot.state, snapshot.last_error) == (Snapshot.State.AVAILABLE, "")
    assert retry_url not in _page(client, snapshot)


def test_a_failed_snapshot_asks_for_its_name_before_it_is_deleted(client, alice, taken):
    Snapshot.objects.filter(pk=taken.pk).update(state=Snapshot.State.ERROR, last_error="disk full")
    client.force_login(alice)
    delete_url = reverse("snapshots:delete", args=[taken.pk])
    assert "Type <code>db-01-nightly</code> to confirm" in _page(client, taken)

    refused = client.post(delete_url, {"confirm": ""}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 400 and refused["HX-Retarget"] == "body"
    assert "Type &#x27;db-01-nightly&#x27; to confirm." in refused.content.decode()
    assert Snapshot.objects.get(pk=taken.pk).state == Snapshot.State.ERROR

    # Posted through htmx, the answer says where to go instead of a redirect followed inside the request.
    response = client.post(delete_url, {"confirm": "db-01-nightly"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 204 and response["HX-Location"] == reverse("snapshots:list")
    assert Snapshot.objects.get(pk=taken.pk).state == Snapshot.State.DELETING
