"""The volume lifecycle from the console: each form calls the same service as the API and the CLI; a
refusal shows at the form, changes nothing and is audited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from clouddigit.audit.models import AuditEntry
from clouddigit.compute import services, work
from clouddigit.compute.models import Volume
from snapshots import services as snapshots
from snapshots.models import Snapshot
from tests.worker import created


@pytest.fixture
def signed_in(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def spare(alice, prod, dha):
    return created(
        services.create_empty_volume(actor=alice, project=prod, region=dha, name="spare-01", size_gib=1)
    )


def detail(volume) -> str:
    return reverse("compute:volume-detail", args=[volume.pk])


def test_create_from_the_volume_list(signed_in, prod, dha):
    response = signed_in.post(reverse("compute:volume-create"), {"name": "scratch", "size_gib": "2"})

    volume = Volume.objects.get(name="scratch")
    assert response.status_code == 302 and response["Location"] == detail(volume)
    assert (volume.project, volume.region_id, volume.size_bytes) == (prod, "bd-dha-1", 2 * 2**30)


def test_a_negative_size_is_shown_at_the_form(signed_in, prod, dha):
    response = signed_in.post(reverse("compute:volume-create"), {"name": "scratch", "size_gib": "-3"})

    assert response.status_code == 400
    assert "The size must be a whole number of GiB from 1 to 16384." in response.content.decode()
    assert not Volume.objects.exists()


def test_attach_as_secondary_then_detach(signed_in, spare, make_vm, prod, django_capture_on_commit_callbacks):
    vm = make_vm(prod, "web-02")
    page = signed_in.get(detail(spare)).content.decode()
    assert f'<option value="{vm.pk}">web-02</option>' in page

    with django_capture_on_commit_callbacks(execute=True):
        attached = signed_in.post(
            reverse("compute:volume-attach", args=[spare.pk]), {"vm": str(vm.pk), "role": "secondary"}
        )
    assert attached.status_code == 302
    assert Volume.objects.get(pk=spare.pk).device == "vdb"

    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(reverse("compute:volume-detach", args=[spare.pk]), {"confirmed": "yes"})
    assert Volume.objects.get(pk=spare.pk).state == "available"


def test_a_detaching_volume_polls_until_it_settles(signed_in, alice, spare, make_vm, prod):
    services.attach_volume(actor=alice, volume=spare, vm=make_vm(prod, "web-02"), device="vdb")
    services.detach_volume(actor=alice, volume=spare)  # its task is not run: it stays detaching

    page = signed_in.get(detail(spare)).content.decode()
    assert "Detaching" in page and 'hx-trigger="every 2s"' in page
    assert signed_in.get(detail(spare), HTTP_HX_REQUEST="true").status_code == 200

    work.finish_detach(str(spare.pk))
    assert signed_in.get(detail(spare), HTTP_HX_REQUEST="true").status_code == 286


def test_a_second_boot_disk_is_refused_at_the_form(signed_in, spare, make_vm, prod):
    vm = make_vm(prod, "web-02")

    response = signed_in.post(
        reverse("compute:volume-attach", args=[spare.pk]), {"vm": str(vm.pk), "role": "boot"}
    )

    assert response.status_code == 409
    assert "already has a boot disk (web-02-boot at vda)" in response.content.decode()
    assert Volume.objects.get(pk=spare.pk).vm is None
    assert AuditEntry.objects.filter(action="compute.volume.attach", outcome="refused").count() == 1


def test_attach_to_a_vm_of_another_project_is_not_found(signed_in, spare, make_vm, sandbox):
    vm = make_vm(sandbox, "dev-01")

    response = signed_in.post(reverse("compute:volume-attach", args=[spare.pk]), {"vm": str(vm.pk)})

    assert response.status_code == 404 and Volume.objects.get(pk=spare.pk).vm is None
    assert AuditEntry.objects.filter(action="compute.volume.attach", outcome="refused").exists()


def test_shrink_is_refused_at_the_form(signed_in, spare):
    response = signed_in.post(reverse("compute:volume-resize", args=[spare.pk]), {"size_gib": "0"})
    assert response.status_code == 400 and "from 1 to 16384" in response.content.decode()


def test_delete_shows_the_snapshot_count_and_needs_the_choice(signed_in, alice, spare, run):
    run(snapshots.create_snapshot, actor=alice, volume=spare, name="snap-1")
    run(snapshots.create_snapshot, actor=alice, volume=spare, name="snap-2")
    url = reverse("compute:volume-delete", args=[spare.pk])
    assert "This volume has <strong>2 snapshots</strong>" in signed_in.get(detail(spare)).content.decode()

    refused = signed_in.post(url, {"confirm": "spare-01"})
    assert refused.status_code == 400 and "has 2 snapshots: choose to keep them" in refused.content.decode()
    assert Volume.objects.filter(pk=spare.pk).exists() and Snapshot.objects.count() == 2


def test_delete_keeping_the_snapshots(signed_in, alice, spare, run, django_capture_on_commit_callbacks):
    run(snapshots.create_snapshot, actor=alice, volume=spare, name="snap-1")

    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(
            reverse("compute:volume-delete", args=[spare.pk]), {"confirm": "spare-01", "snapshots": "keep"}
        )

    assert response.status_code == 302 and response["Location"] == reverse("compute:volume-list")
    assert not Volume.objects.filter(pk=spare.pk).exists()
    assert Snapshot.objects.get().state == "available"


def test_restore_one_disk_of_a_vm_snapshot_from_the_console(signed_in, alice, make_vm, prod, dha, run):
    vm = make_vm(prod, "db-01")
    data = created(
        services.create_empty_volume(actor=alice, project=prod, region=dha, name="db-data", size_gib=1)
    )
    services.attach_volume(actor=alice, volume=data, vm=vm, device="vdb")
    snapshot = run(snapshots.create_snapshot, actor=alice, vm=vm, name="db-snap")
    page = signed_in.get(reverse("snapshots:detail", args=[snapshot.pk])).content.decode()
    assert '<option value="vdb">vdb · db-data</option>' in page

    response = signed_in.post(
        reverse("snapshots:restore-volume", args=[snapshot.pk]), {"name": "inspect", "disk": "vdb"}
    )

    assert response.status_code == 302
    assert Volume.objects.get(name="inspect").size_bytes == 2**30


def test_delete_with_the_snapshots_keeps_a_vm_snapshot_of_other_volumes_too(
    signed_in, alice, make_vm, prod, dha, run, django_capture_on_commit_callbacks
):
    vm = make_vm(prod, "db-01")
    data = created(
        services.create_empty_volume(actor=alice, project=prod, region=dha, name="db-data", size_gib=1)
    )
    services.attach_volume(actor=alice, volume=data, vm=vm, device="vdb")
    run(snapshots.create_snapshot, actor=alice, vm=vm, name="db-snap")
    run(snapshots.create_snapshot, actor=alice, volume=Volume.objects.get(pk=data.pk), name="data-snap")
    run(services.detach_volume, actor=alice, volume=Volume.objects.get(pk=data.pk))
    page = signed_in.get(detail(data)).content.decode()
    assert "This volume has <strong>2 snapshots</strong> (data-snap, db-snap)." in page
    assert "VM snapshots that also hold other volumes (1) are kept either way." in page

    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(
            reverse("compute:volume-delete", args=[data.pk]), {"confirm": "db-data", "snapshots": "delete"}
        )

    assert not Volume.objects.filter(pk=data.pk).exists()
    assert list(Snapshot.objects.values_list("name", flat=True)) == ["db-snap"]
