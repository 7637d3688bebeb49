from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from clouddigit.audit.models import AuditEntry
from clouddigit.compute.models import VM
from snapshots.models import Restore, Snapshot


@pytest.fixture
def db01(make_vm, prod):
    return make_vm(prod, "db-01", tags={"env": "prod"})


def _take(client, db01, django_capture_on_commit_callbacks, **data):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("snapshots:create-for-vm", args=[db01.pk]), data)
    return response, Snapshot.objects.get(vm=db01, origin="manual")


def test_take_a_snapshot_from_the_vm_page_and_see_it(client, alice, db01, django_capture_on_commit_callbacks):
    client.force_login(alice)
    assert "Take snapshot" in client.get(reverse("compute:vm-detail", args=[db01.pk])).content.decode()
    response, snapshot = _take(client, db01, django_capture_on_commit_callbacks, name="before-upgrade")
    assert response["Location"] == reverse("snapshots:detail", args=[snapshot.pk])

    page = client.get(response["Location"]).content.decode()
    assert "before-upgrade" in page and "Available" in page and "db-01-boot" in page
    assert "asked <strong>application</strong>, got <strong>application</strong>" in page
    listing = client.get(reverse("snapshots:list")).content.decode()
    assert "before-upgrade" in listing


def test_restore_to_new_volume_from_the_console(client, alice, db01, django_capture_on_commit_callbacks):
    client.force_login(alice)
    _, snapshot = _take(client, db01, django_capture_on_commit_callbacks)
    url = reverse("snapshots:restore-volume", args=[snapshot.pk])
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url, {"name": "db-01-copy"})
    restore = Restore.objects.get(name="db-01-copy")
    assert restore.state == "done"
    page = client.get(reverse("snapshots:detail", args=[snapshot.pk])).content.decode()
    assert "db-01-copy" in page and f"{restore.seconds:.2f} s" in page

    again = client.post(url, {"name": "db-01-copy"})  # the name is taken now
    assert again.status_code == 409
    assert "already exists" in again.content.decode()


def test_rollback_needs_the_typed_name_and_a_stopped_vm(
    client, alice, db01, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    _, snapshot = _take(client, db01, django_capture_on_commit_callbacks)
    url = reverse("snapshots:rollback", args=[snapshot.pk])
    wrong = client.post(url, {"confirm": "db01"})
    assert wrong.status_code == 400 and "not undoable" in wrong.content.decode()
    assert AuditEntry.objects.filter(action="snapshot.rollback", outcome="refused").exists()

    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(url, {"confirm": "db-01"}, follow=True)
    assert "safety snapshot" in done.content.decode()
    assert Snapshot.objects.filter(origin="safety", rollback_of=snapshot, state="available").exists()


def test_delete_goes_back_to_the_list(client, alice, db01, django_capture_on_commit_callbacks):
    client.force_login(alice)
    _, snapshot = _take(client, db01, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("snapshots:delete", args=[snapshot.pk]), {"confirm": snapshot.name})
    assert response["Location"] == reverse("snapshots:list")
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists()


def test_a_snapshot_in_creating_shows_what_it_waits_for_and_polls(client, alice, db01):
    client.force_login(alice)
    client.post(reverse("snapshots:create-for-vm", args=[db01.pk]), {})  # no worker runs it
    snapshot = Snapshot.objects.get(vm=db01)
    page = client.get(reverse("snapshots:detail", args=[snapshot.pk])).content.decode()
    assert (
        "What it is waiting for" in page
        and "Snapshot backend slow" in page
        and 'hx-trigger="every 3s"' in page
    )
    fragment = client.get(reverse("snapshots:detail", args=[snapshot.pk]), HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200 and fragment.content.decode().lstrip().startswith(
        '<section id="status"'
    )


def test_a_viewer_sees_no_actions(
    client, bob, db01, django_user_model, prod, django_capture_on_commit_callbacks
):
    from iam.services import grant_role

    django_user_model.objects.create_user("vic")
    grant_role(actor=None, role="snapshot.viewer", account=prod.account, project=prod, username="vic")
    vic = django_user_model.objects.get(username="vic")
    from snapshots import services

    with django_capture_on_commit_callbacks(execute=True):
        snapshot = services.create_snapshot(actor=None, vm=VM.objects.get(pk=db01.pk))
    client.force_login(vic)
    page = client.get(reverse("snapshots:detail", args=[snapshot.pk])).content.decode()
    assert "Restore to new VM" not in page and "Roll back db-01" not in page and "Delete snapshot" not in page
    assert "needs the snapshot.operator role" in page


def test_an_admin_raises_a_volume_limit_with_a_ticket(client, alice, bob, data_volume):
    from snapshots.services import snapshot_limit

    url = reverse("snapshots:raise-volume-limit", args=[data_volume.pk])
    client.force_login(alice)
    page = client.get(reverse("compute:volume-detail", args=[data_volume.pk])).content.decode()
    assert "keeps at most <strong>100</strong>" in page and "Raise limit" in page
    client.post(url, {"limit": "250", "ticket": ""})
    assert snapshot_limit(data_volume) == 100
    client.post(url, {"limit": "250", "ticket": "OPS-42"})
    assert snapshot_limit(data_volume) == 250
    assert AuditEntry.objects.filter(action="snapshot.limit.raise", outcome="success").exists()
    assert AuditEntry.objects.filter(action="snapshot.limit.raise", outcome="refused").exists()


def test_a_refused_snapshot_shows_its_error_in_the_panel_on_the_vm_page(client, alice, db01):
    client.force_login(alice)
    url = reverse("snapshots:create-for-vm", args=[db01.pk])
    for headers in ({}, {"HTTP_HX_REQUEST": "true"}):
        response = client.post(url, {"name": "x" * 101}, **headers)
        assert response.status_code == 400
        page = response.content.decode()
        # The whole VM page (not its polled fragment), the error at the snapshots panel's form.
        assert "<h2>Power</h2>" in page and "<h2>Volumes</h2>" in page
        assert page.index("is not a valid name") > page.index('class="inline-form take"')
        assert f'href="{reverse("compute:vm-list")}" aria-current="page">VMs</a>' in page
    assert response["HX-Retarget"] == "body"
    assert not Snapshot.objects.filter(vm=db01).exists()


def test_a_refused_limit_shows_its_error_in_the_panel_on_the_volume_page(client, alice, data_volume):
    client.force_login(alice)
    response = client.post(
        reverse("snapshots:raise-volume-limit", args=[data_volume.pk]), {"limit": "250", "ticket": " "}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "<h2>Storage chain</h2>" in page
    assert page.index("This field is required") > page.index("<h2>Snapshot limit</h2>")
    assert f'href="{reverse("compute:volume-list")}" aria-current="page">Volumes</a>' in page


def test_the_volume_page_shows_the_chain_recorded_by_snapshots_without_running_qemu_img(
    client, alice, data_volume, django_capture_on_commit_callbacks, monkeypatch
):
    from clouddigit.backends import volumes
    from snapshots import services

    first_file = data_volume.path
    assert [layer["file"] for layer in data_volume.backing_chain] == [Path(first_file).name]
    with django_capture_on_commit_callbacks(execute=True):
        snapshot = services.create_snapshot(actor=None, volume=data_volume, name="before")
    data_volume.refresh_from_db()
    assert [layer["file"] for layer in data_volume.backing_chain] == [
        Path(data_volume.path).name,
        Path(first_file).name,
    ]
    assert data_volume.backing_chain[0]["backing"] == Path(first_file).name

    def no_qemu_img(*args, **kwargs):
        raise AssertionError("qemu-img ran inside a web request")

    monkeypatch.setattr(volumes, "backing_chain", no_qemu_img)
    client.force_login(alice)
    page = client.get(reverse("compute:volume-detail", args=[data_volume.pk])).content.decode()
    assert Path(data_volume.path).name in page and Path(first_file).name in page and "As recorded" in page
    assert str(Path(first_file).parent) not in page  # the host's folders are not shown to tenants
    monkeypatch.undo()

    with django_capture_on_commit_callbacks(execute=True):
        services.delete_snapshot(actor=None, snapshot=snapshot, confirm=snapshot.name)
    data_volume.refresh_from_db()
    assert [layer["file"] for layer in data_volume.backing_chain] == [Path(data_volume.path).name]
