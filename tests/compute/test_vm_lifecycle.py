"""Deleting VMs, tagging VMs and volumes, one name rule: services and API, bad input refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from clouddigit.audit.models import AuditEntry
from clouddigit.backends import hypervisor
from clouddigit.backends.hypervisor.connections import connection
from clouddigit.compute import services as compute
from clouddigit.compute import work
from clouddigit.compute.models import VM, Volume
from clouddigit.errors import Conflict, InvalidRequest
from clouddigit.names import RULE, problem
from policies.coverage import coverage
from policies.engine import in_scope
from snapshots import services as snapshots
from snapshots.models import Snapshot
from tests.api.test_api import api
from tests.policies.test_scheduler import _policy
from tests.worker import created

pytestmark = pytest.mark.django_db
MiB = 2**20


@pytest.fixture
def db01(make_vm, prod, dha, committed):
    """db-01, stopped, with a data volume on vdb and a VM snapshot."""
    vm = make_vm(prod, "db-01", tags={"env": "prod", "role": "db"})
    data = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="db-01-data", size_bytes=8 * MiB)
    )
    compute.attach_volume(actor=None, volume=data, vm=vm, device="vdb")
    with committed():
        snapshots.create_snapshot(actor=None, vm=VM.objects.get(pk=vm.pk), name="db-01-nightly")
    return VM.objects.get(pk=vm.pk)


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    return lambda: django_capture_on_commit_callbacks(execute=True)


def _last_entry(action: str) -> AuditEntry:
    return AuditEntry.objects.filter(action=action).order_by("-at").first()


# --- Delete -----------------------------------------------------------------------------------------


def test_deleting_a_running_vm_is_refused_says_stop_first_and_changes_nothing(alice, db01, committed):
    with committed():
        compute.start_vm(actor=None, vm=db01)
    vm = VM.objects.get(pk=db01.pk)
    assert vm.state == VM.State.RUNNING
    with pytest.raises(Conflict, match="stop it first"):
        compute.delete_vm(actor=alice, vm=vm, confirm="db-01")
    vm.refresh_from_db()
    assert vm.state == VM.State.RUNNING and vm.volumes.count() == 2
    entry = _last_entry("compute.vm.delete")
    assert entry.outcome == AuditEntry.Outcome.REFUSED and "stop it first" in entry.message


def test_a_stopped_vm_is_deleted_keeping_its_data_volume_and_snapshots(alice, db01, committed):
    boot = db01.volumes.get(device="vda")
    data = db01.volumes.get(device="vdb")
    uri, spec = db01.host.libvirt_uri, work.domain_spec(db01)
    hypervisor.ensure_domain(uri, spec)
    with committed():
        compute.delete_vm(actor=alice, vm=db01, confirm="db-01")
    assert not VM.objects.filter(pk=db01.pk).exists()
    assert spec.uuid not in connection(uri).listDefinedDomains() + [
        dom.UUIDString() for dom in connection(uri).listAllDomains()
    ]
    assert not Volume.objects.filter(pk=boot.pk).exists() and not Path(boot.path).exists()
    data.refresh_from_db()  # the default: data volumes stay, detached
    assert (data.state, data.vm, data.device) == (Volume.State.AVAILABLE, None, "")
    assert Path(data.path).exists()
    snapshot = Snapshot.objects.get(name="db-01-nightly")  # snapshots outlive the VM and can restore it
    assert snapshot.vm is None and snapshot.vm_name == "db-01"
    with committed():
        restore = snapshots.restore_to_vm(actor=alice, snapshot=snapshot, name="db-01-back", vpc="prod-vpc")
    restore.refresh_from_db()
    assert restore.state == restore.State.DONE
    assert _last_entry("compute.vm.delete").outcome == AuditEntry.Outcome.SUCCESS


def test_each_volume_can_be_kept_or_deleted(alice, db01, committed):
    boot, data = db01.volumes.get(device="vda"), db01.volumes.get(device="vdb")
    with committed():
        compute.delete_vm(
            actor=alice, vm=db01, confirm="db-01", volumes={"db-01-boot": "keep", str(data.pk): "delete"}
        )
    assert Volume.objects.get(pk=boot.pk).state == Volume.State.AVAILABLE
    assert not Volume.objects.filter(pk=data.pk).exists() and not Path(data.path).exists()


@pytest.mark.parametrize(
    ("confirm", "volumes", "message"),
    [
        ("db-1", None, "Type 'db-01' to confirm"),
        ("db-01", {"db-01-dat": "keep"}, "has no attached volume 'db-01-dat'"),
        ("db-01", {"db-01-data": "shred"}, "say keep or delete"),
    ],
)
def test_a_delete_without_its_typed_name_or_with_a_wrong_choice_changes_nothing(
    alice, db01, confirm, volumes, message
):
    with pytest.raises(InvalidRequest, match=message):
        compute.delete_vm(actor=alice, vm=db01, confirm=confirm, volumes=volumes)
    assert VM.objects.get(pk=db01.pk).state == VM.State.STOPPED
    assert db01.volumes.count() == 2


def test_the_api_deletes_a_restored_vm_and_refuses_a_running_one(alice, charlie, db01, committed):
    snapshot = Snapshot.objects.get(name="db-01-nightly")
    with committed():
        restore = snapshots.restore_to_vm(
            actor=alice, snapshot=snapshot, name="db-01-copy", vpc="sandbox-vpc"
        )
    copy = VM.objects.get(pk=restore.vm_id)
    assert copy.state == VM.State.RUNNING
    url = f"/api/v1/compute/vms/{copy.pk}/"
    refused = api(alice).delete(f"{url}?confirm=db-01-copy")
    assert refused.status_code == 409 and "stop it first" in refused.json()["message"]
    assert api(charlie).delete(f"{url}?confirm=db-01-copy").status_code == 404
    with committed():
        compute.stop_vm(actor=alice, vm=copy)
    with committed():
        answer = api(alice).delete(f"{url}?confirm=db-01-copy&delete_volume=db-01-copy-vdb")
    assert answer.status_code == 202 and answer.json()["state"] == "deleting"
    assert not VM.objects.filter(pk=copy.pk).exists()
    assert not Volume.objects.filter(name__startswith="db-01-copy").exists()


def test_a_delete_that_fails_leaves_the_vm_stopped_with_the_reason(alice, db01, monkeypatch, committed):
    def host_gone(uri, spec):
        raise hypervisor.HypervisorError("host bd-dha-1-host-1 does not answer")

    monkeypatch.setattr(compute.hypervisor, "remove", host_gone)
    with pytest.raises(hypervisor.HypervisorError), committed():
        compute.delete_vm(actor=alice, vm=db01, confirm="db-01")
    vm = VM.objects.get(pk=db01.pk)
    assert vm.state == VM.State.STOPPED and "does not answer" in vm.last_error
    monkeypatch.undo()
    with committed():
        compute.delete_vm(actor=alice, vm=vm, confirm="db-01")  # deleted again: goes on
    assert not VM.objects.filter(pk=db01.pk).exists()


# --- Tags -------------------------------------------------------------------------------------------


def test_a_vm_made_with_a_tag_is_covered_by_the_tag_scoped_policy(alice, prod, make_vm):
    policy = _policy(prod)
    web = make_vm(prod, "web-09", tags={"env": "prod"})
    untagged = make_vm(prod, "web-10")
    assert list(in_scope(policy)) == [web]
    response = api(alice).patch(
        f"/api/v1/compute/vms/{untagged.pk}/", {"tags": {"env": "prod"}}, format="json"
    )
    assert response.status_code == 200 and response.json()["tags"] == {"env": "prod"}
    from django.utils import timezone

    assert [row.vm.name for row in coverage(policy, timezone.now())] == ["web-09", "web-10"]


def test_tags_are_patched_set_and_removed(alice, make_vm, prod):
    vm = make_vm(prod, "web-01", tags={"env": "prod", "role": "web"})
    url = f"/api/v1/compute/vms/{vm.pk}/"
    answer = api(alice).patch(url, {"tags": {"env": "dev", "role": None, "team": "a"}}, format="json")
    assert answer.status_code == 200, answer.json()
    assert VM.objects.get(pk=vm.pk).tags == {"env": "dev", "team": "a"}
    missing = api(alice).patch(url, {"tags": {"owner": None}}, format="json")
    assert missing.status_code == 400 and "no tag 'owner' to remove" in missing.json()["message"]


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"env": "prod\x00"}, "Null characters are not allowed"),
        ({"env": "a\nb"}, "control characters"),
        ({"env\n": "prod"}, "is not valid"),
        ({"env": "x" * 10_000}, "at most 255 characters"),
        ({f"k{i}": "v" for i in range(51)}, "At most 50 tags"),
        ({"E" * 10_000: "v"}, "(10000 characters) is not valid"),
    ],
)
def test_bad_tags_are_refused_with_a_clear_error_nothing_changed_and_audited(
    alice, make_vm, prod, tags, message
):
    vm = make_vm(prod, "web-01", tags={"env": "prod"})
    answer = api(alice).patch(f"/api/v1/compute/vms/{vm.pk}/", {"tags": tags}, format="json")
    assert answer.status_code == 400 and message in answer.json()["message"]
    assert len(answer.json()["message"]) < 400
    assert VM.objects.get(pk=vm.pk).tags == {"env": "prod"}
    entry = AuditEntry.objects.order_by("-at").first()  # by the service, or by the API for the serializer
    assert entry.action in {"compute.vm.tag", "api.vm.partial_update"}
    assert entry.outcome == AuditEntry.Outcome.REFUSED and message in entry.message


def test_volume_tags_are_patched_too(alice, charlie, make_vm, prod):
    volume = make_vm(prod, "web-01").volumes.get()
    url = f"/api/v1/compute/volumes/{volume.pk}/"
    assert api(alice).patch(url, {"tags": {"backup": "daily"}}, format="json").status_code == 200
    assert Volume.objects.get(pk=volume.pk).tags == {"backup": "daily"}
    assert api(charlie).patch(url, {"tags": {"backup": "no"}}, format="json").status_code == 404


# --- Names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["<b>db</b>", "../../etc/passwd", "db 01", "-rf", "", "é", "a" * 64])
def test_one_name_rule_and_one_message_for_every_kind(name):
    assert problem(name).endswith(f"is not a valid name: {RULE}.")


@pytest.mark.parametrize("name", ["db-01", "DB_01.v2", "a" * 63])
def test_good_names_pass(name):
    assert problem(name) == ""


def test_a_snapshot_name_with_html_or_a_path_is_refused_like_a_vm_name(alice, db01):
    for name in ["<script>x</script>", "../../etc/passwd", "nightly backup"]:
        answer = api(alice).post(
            "/api/v1/compute/snapshots/", {"vm": str(db01.pk), "name": name}, format="json"
        )
        assert answer.status_code == 400, answer.json()
        assert answer.json()["message"].endswith(f"is not a valid name: {RULE}.")


def test_a_10000_character_name_is_a_short_clear_error_audited_nothing_made(alice, db01, prod):
    long_name = "v" * 10_000
    vms_before, snapshots_before = VM.objects.count(), Snapshot.objects.count()
    for url, body in [
        (
            "/api/v1/compute/vms/",
            {"project": "acme/prod", "name": long_name, "image": "x", "flavor": "std-2x4", "vpc": "v"},
        ),
        ("/api/v1/compute/snapshots/", {"vm": str(db01.pk), "name": long_name}),
    ]:
        answer = api(alice).post(url, body, format="json")
        assert answer.status_code == 400
        assert "(10000 characters) is not a valid name" in answer.json()["message"]
        assert len(answer.json()["message"]) < 300
    with pytest.raises(InvalidRequest, match="10000 characters"):
        created(
            compute.create_vm(
                actor=alice,
                project=prod,
                region=db01.region,
                name=long_name,
                flavor="std-2x4",
                vpc="v",
                boot_size_bytes=MiB,
            )
        )
    assert (VM.objects.count(), Snapshot.objects.count()) == (vms_before, snapshots_before)
    assert _last_entry("compute.vm.create").outcome == AuditEntry.Outcome.REFUSED


def test_the_demo_names_pass_the_rule():
    from clouddigit.management.commands import demo

    names = [vm.name for vm in demo.VMS] + [image[1] for image in demo.PLATFORM_IMAGES]
    names += [volume[0] for vm in demo.VMS for volume in vm.data_volumes]
    assert [name for name in names if problem(name)] == []


def test_a_publisher_who_sees_no_snapshots_is_told_what_promoting_needs(bob, db01):
    snapshot = Snapshot.objects.get(name="db-01-nightly")
    answer = api(bob).post(
        "/api/v1/compute/images/promote/", {"snapshot": str(snapshot.pk), "name": "db-01-img"}, format="json"
    )
    assert answer.status_code == 400
    message = answer.json()["message"]
    assert message.startswith(f"There is no snapshot {snapshot.pk} that you can see.")
    assert "needs a role that sees the project's snapshots (snapshot.viewer or above) in acme/prod" in message


def test_a_vm_whose_create_failed_is_an_error_retried_or_deleted_by_its_owner(
    alice, prod, dha, run, monkeypatch, tmp_path
):
    missing = tmp_path / "gone.qcow2"
    with pytest.raises(Exception, match="gone.qcow2"):  # the worker's task fails
        run(
            compute.create_vm,
            actor=alice,
            project=prod,
            region=dha,
            name="web-9",
            flavor="std-2x4",
            vpc="v",
            boot_size_bytes=MiB,
            boot_source_path=str(missing),
        )

    vm = VM.objects.get(name="web-9")
    boot = vm.volumes.get()
    assert vm.state == "error" and vm.last_error.startswith("Create failed:")
    assert boot.state == "error" and not Path(boot.path).exists()
    assert AuditEntry.objects.filter(action="compute.vm.create", outcome="failed").exists()
    with pytest.raises(InvalidRequest, match="was never made"):
        compute.delete_vm(actor=alice, vm=vm, confirm="web-9", volumes={"web-9-boot": "keep"})

    with pytest.raises(Exception, match="gone.qcow2"):  # retried while the file is still missing
        run(compute.retry_vm, actor=alice, vm=vm)
    vm.refresh_from_db()
    assert vm.state == "error"

    run(compute.delete_vm, actor=alice, vm=vm, confirm="web-9")
    assert not VM.objects.filter(pk=vm.pk).exists() and not Volume.objects.filter(pk=boot.pk).exists()
