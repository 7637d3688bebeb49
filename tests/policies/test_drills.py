from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clouddigit.backends import volumes
from clouddigit.compute import services as compute
from clouddigit.compute.models import VM, Volume
from clouddigit.errors import Conflict
from policies import drills
from policies import work as drill_work
from policies.models import Drill, Policy
from policies.services import apply_policy
from snapshots import services as snapshots
from snapshots import work as snapshot_work
from tests.policies.test_scheduler import POLICY
from tests.worker import created

MiB = 2**20


@pytest.fixture
def db01(make_vm, prod, dha, django_capture_on_commit_callbacks):
    vm = make_vm(prod, "db-01", tags={"env": "prod"})
    data = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="db-01-data", size_bytes=8 * MiB)
    )
    compute.attach_volume(actor=None, volume=data, vm=vm, device="vdb")
    volumes.write_pattern(data.path, 0, MiB, 0x5D)
    with django_capture_on_commit_callbacks(execute=True):
        compute.start_vm(actor=None, vm=vm)
        snapshots.create_snapshot(actor=None, vm=VM.objects.get(pk=vm.pk), name="db-01-nightly")
    return VM.objects.get(pk=vm.pk)


def test_a_drill_restores_boots_checks_and_cleans_up(operator, db01, django_capture_on_commit_callbacks):
    volumes_before = Volume.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        drill = drills.run_drill(actor=operator, vm=db01)
    drill.refresh_from_db()
    assert drill.state == Drill.State.PASSED, (drill.error, drill.checks)
    assert drill.seconds is not None and drill.snapshot_name == "db-01-nightly"
    assert [check["check"] for check in drill.checks] == [
        "boots on the hypervisor",
        "vda reads back the snapshot",
        "vdb reads back the snapshot",
    ]
    assert not VM.objects.filter(name__contains="-drill-").exists()  # cleaned up
    assert Volume.objects.count() == volumes_before


def test_a_vm_without_a_vm_snapshot_cannot_be_drilled(operator, make_vm, prod):
    with pytest.raises(Conflict, match="no available VM snapshot"):
        drills.run_drill(actor=operator, vm=make_vm(prod, "web-01"))


def test_drills_come_due_once_a_quarter_per_policy(db01, prod, django_capture_on_commit_callbacks):
    apply_policy(actor=None, project=prod, text=POLICY.format(when_stopped="skip"))
    policy = Policy.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        drills.due(datetime(2026, 1, 1, tzinfo=UTC))
        drills.due(datetime(2026, 2, 1, tzinfo=UTC))  # not a quarter later: nothing
    assert list(policy.drills.values_list("state", flat=True)) == ["passed"]


def test_run_a_drill_now_from_the_policy_page(client, alice, db01, prod, django_capture_on_commit_callbacks):
    from django.urls import reverse

    policy = apply_policy(actor=None, project=prod, text=POLICY.format(when_stopped="skip"))
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("policies:drill", args=[policy.pk]))
    page = client.get(reverse("policies:detail", args=[policy.pk])).content.decode()
    assert "Restore drills" in page and "db-01-nightly" in page and "Passed" in page
    assert "boots on the hypervisor" in page


def test_the_drill_history_shows_the_time_to_restore_trend(
    client, alice, db01, prod, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    policy = apply_policy(actor=None, project=prod, text=POLICY.format(when_stopped="skip"))
    client.force_login(alice)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            client.post(reverse("policies:drill", args=[policy.pk]))
    page = client.get(reverse("policies:detail", args=[policy.pk])).content.decode()
    assert '<svg class="spark"' in page and "Time to restore, oldest to newest" in page


def test_a_drill_takes_the_vm_asked_for_else_the_one_drilled_least_recently(
    db01, make_vm, prod, django_capture_on_commit_callbacks
):
    policy = apply_policy(actor=None, project=prod, text=POLICY.format(when_stopped="skip"))
    web = make_vm(prod, "web-01", tags={"env": "prod"})
    with django_capture_on_commit_callbacks(execute=True):
        compute.start_vm(actor=None, vm=web)
        snapshots.create_snapshot(actor=None, vm=VM.objects.get(pk=web.pk), name="web-01-nightly")
    first = drills.vm_to_drill(policy)
    drills.run_drill(actor=None, vm=first, policy=policy)  # queued only: its drill row is what counts
    other = drills.vm_to_drill(policy)
    assert {first, other} == {db01, web}
    assert drills.vm_to_drill(policy, str(first.pk)) == first
    assert drills.vm_to_drill(policy, "not-in-scope") == other


def test_a_drill_whose_snapshot_is_deleted_before_its_checks_fails_saying_so(
    operator, db01, monkeypatch, django_capture_on_commit_callbacks
):
    finish = drill_work._finish

    def finish_then_delete_the_snapshot(restore):
        finish(restore)
        snapshot = restore.snapshot
        snapshots.delete_snapshot(actor=None, snapshot=snapshot, confirm=snapshot.name)
        snapshot_work.finish_delete(str(snapshot.pk))  # its worker is quicker than the drill's

    monkeypatch.setattr(drill_work, "_finish", finish_then_delete_the_snapshot)
    with django_capture_on_commit_callbacks(execute=True):
        drill = drills.run_drill(actor=operator, vm=db01)
    drill.refresh_from_db()
    assert drill.state == Drill.State.FAILED
    assert drill.error == (
        "Conflict: The snapshot db-01-nightly was deleted before the drill checked its disks; "
        "run a new drill (it restores the VM's latest snapshot)."
    )
    assert not VM.objects.filter(name__contains="-drill-").exists()  # cleaned up
