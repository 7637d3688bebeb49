"""`clouddigit compute restore|image|snapshot policy drill` retry and delete against a live server: tasks
run eagerly right after each commit, so a retried operation has finished when the command answers."""

from __future__ import annotations

import json

import pytest

from clouddigit.cli.output import cell
from clouddigit.compute.models import VM, Volume
from images.models import Image
from policies.models import Drill
from snapshots import services as snapshots
from snapshots.models import Restore, Snapshot
from tests.policies.test_drill_retry import DID_NOT_BOOT, _drill, policy  # noqa: F401  (fixtures)
from tests.policies.test_drills import db01  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db

HOST_GONE = "the hypervisor host went away mid-copy"


def ok(result):
    assert result.code == 0, result.err
    return result


@pytest.fixture
def taken(make_vm, prod, committed) -> Snapshot:
    vm = make_vm(prod, "web-01")
    with committed():
        snapshot = snapshots.create_snapshot(actor=None, vm=VM.objects.get(pk=vm.pk), name="web-01-nightly")
    return Snapshot.objects.get(pk=snapshot.pk)


@pytest.fixture
def failed_restore(taken, committed) -> Restore:
    with committed():
        restore = snapshots.restore_to_volume(actor=None, snapshot=taken, name="web-01-copy")
    # Its task ran at once (eager); make it the restore whose host went away before it finished.
    Volume.objects.filter(pk=restore.volume_id).update(state=Volume.State.CREATING)
    Restore.objects.filter(pk=restore.pk).update(
        state=Restore.State.FAILED, last_error=HOST_GONE, seconds=None, finished_at=None
    )
    return Restore.objects.get(pk=restore.pk)


# --- Restores ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_failed_restore_is_listed_with_its_reason_and_retried(live_cli, alice, failed_restore):
    restore = failed_restore
    listed = ok(live_cli(alice, "compute", "restore", "list", "--state", "failed")).out
    assert listed.split()[:4] == [str(restore.pk), "web-01-copy", "volume", "failed"]
    assert listed.split()[-1] == cell(HOST_GONE)  # one token: the_hypervisor_host_went_away_mid-copy

    retried = json.loads(
        ok(live_cli(alice, "compute", "restore", "retry", str(restore.pk), "-o", "json")).out
    )
    assert (retried["id"], retried["state"], retried["last_error"]) == (str(restore.pk), "done", "")
    again = live_cli(alice, "compute", "restore", "retry", str(restore.pk))
    assert again.code == 1 and again.err.startswith("ERROR: Conflict: The restore of web-01-nightly")
    assert "nothing to retry" in again.err


def test_delete_a_failed_restore_and_what_it_began(cli, alice, failed_restore):
    restore = failed_restore
    result = ok(cli(alice, "compute", "restore", "delete", str(restore.pk)))
    assert result.out == f"Deleted failed restore {restore.pk} and the volume or VM it had begun to make\n"
    assert not Restore.objects.filter(pk=restore.pk).exists()
    assert not Volume.objects.filter(name="web-01-copy").exists()


def test_an_outsider_can_neither_retry_nor_delete_a_restore(cli, charlie, failed_restore):
    restore = failed_restore
    for command in ("retry", "delete"):
        result = cli(charlie, "compute", "restore", command, str(restore.pk))
        assert result.code == 1 and result.err.startswith("ERROR: NotFound"), result.err
    assert Restore.objects.get(pk=restore.pk).state == Restore.State.FAILED


def test_a_restore_is_named_by_its_id(run, capsys):
    with pytest.raises(SystemExit) as exited:
        run("compute", "restore", "retry", "web-01-copy")
    assert exited.value.code == 2
    assert "'web-01-copy' is not an id: copy it from the list" in capsys.readouterr().err


# --- Images -----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_failed_promotion_is_retried_by_name(
    live_cli, alice, bob, make_vm, prod, dha, image_stores, committed
):
    vm = make_vm(prod, "db-01")
    with committed():
        snapshot = snapshots.create_snapshot(actor=None, volume=vm.volumes.get(), name="db-boot")
    image = Image.objects.create(
        project=prod,
        region=dha,
        name="db-base",
        source=Image.Source.SNAPSHOT,
        source_snapshot=Snapshot.objects.get(pk=snapshot.pk),
        state=Image.State.FAILED,
        last_error="qemu-img convert: No space left on device",
        created_by="bob",
    )
    refused = live_cli(alice, "compute", "image", "retry", "db-base", "--region", "bd-ctg-1")
    assert refused.err == "ERROR: NotFound: no image named 'db-base' in bd-ctg-1 that you can see\n"

    retried = json.loads(ok(live_cli(bob, "compute", "image", "retry", "db-base", "-o", "json")).out)
    assert (retried["id"], retried["state"], retried["last_error"]) == (str(image.pk), "available", "")
    again = live_cli(bob, "compute", "image", "retry", str(image.pk))
    assert again.code == 1 and "Image db-base is available: there is nothing to retry." in again.err


# --- Drills -----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_drills_are_listed_retried_and_deleted(live_cli, alice, charlie, policy, db01):  # noqa: F811
    failed = _drill(policy, db01)
    listed = ok(
        live_cli(alice, "compute", "snapshot", "policy", "drill", "list", "--policy", policy.name)
    ).out
    assert listed.split()[:5] == [str(failed.pk), "db-01", "db-01-nightly", policy.name, "failed"]
    assert listed.split()[-1] == cell(DID_NOT_BOOT)
    assert ok(live_cli(charlie, "compute", "snapshot", "policy", "drill", "list")).out == ""

    drill = ["compute", "snapshot", "policy", "drill"]
    outsider = live_cli(charlie, *drill, "retry", str(failed.pk))
    assert outsider.code == 1 and outsider.err.startswith("ERROR: NotFound")
    retried = json.loads(ok(live_cli(alice, *drill, "retry", str(failed.pk), "-o", "json")).out)
    assert (retried["state"], retried["error"]) == ("passed", ""), retried["checks"]

    refused = live_cli(alice, *drill, "delete", str(failed.pk))
    assert refused.code == 1 and "only a failed drill is deleted" in refused.err
    second = _drill(policy, db01)
    assert ok(live_cli(alice, *drill, "delete", str(second.pk))).out == f"Deleted failed drill {second.pk}\n"
    assert list(Drill.objects.values_list("pk", flat=True)) == [failed.pk]
