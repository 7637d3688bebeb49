from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from clouddigit.audit.models import AuditEntry
from iam.services import grant_role
from snapshots import services, work
from snapshots.filters import parse_since
from snapshots.models import Restore, Snapshot, SnapshotLimit

SNAPSHOTS = "/api/v1/compute/snapshots/"
NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def names(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [item["name"] for item in response.json()["results"]]


@pytest.fixture
def viewer(django_user_model, prod):
    django_user_model.objects.create_user("vera")
    grant_role(actor=None, role="snapshot.viewer", account=prod.account, project=prod, username="vera")
    return django_user_model.objects.get(username="vera")


@pytest.fixture
def taken(run, operator, data_volume):
    """An available snapshot of data-01."""
    return run(services.create_snapshot, actor=operator, volume=data_volume, name="taken")


def queued(actor, age: timedelta = timedelta(0), **kwargs) -> Snapshot:
    """A snapshot row as the service writes it, its task not run (it stays `creating`)."""
    snapshot = services.create_snapshot(actor=actor, **kwargs)
    Snapshot.objects.filter(pk=snapshot.pk).update(created_at=timezone.now() - age)
    return snapshot


# --- since ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("30m", NOW - timedelta(minutes=30)),
        ("7d", NOW - timedelta(days=7)),
        ("2w", NOW - timedelta(weeks=2)),
        ("90s", NOW - timedelta(seconds=90)),
        (" 24h ", NOW - timedelta(hours=24)),
        ("2026-11-25T02:00:00Z", datetime(2026, 11, 25, 2, tzinfo=UTC)),
        ("2026-11-25T08:00:00+06:00", datetime(2026, 11, 25, 2, tzinfo=UTC)),
        ("2026-11-25 02:00", datetime(2026, 11, 25, 2, tzinfo=UTC)),
        ("2026-11-25", datetime(2026, 11, 25, tzinfo=UTC)),
    ],
)
def test_since_takes_a_duration_or_an_iso_timestamp(text, moment):
    assert parse_since(text, now=NOW) == moment


@pytest.mark.parametrize("text", ["yesterday", "24", "h", "-1h", "1.5h", "24 hours", "2026-02-30", ""])
def test_since_refuses_anything_else_saying_what_it_takes(text):
    with pytest.raises(ValueError, match="neither a duration .* nor an ISO timestamp"):
        parse_since(text, now=NOW)


def test_since_too_far_back_is_refused():
    with pytest.raises(ValueError, match="further than any snapshot"):
        parse_since("99999999999d", now=NOW)


# --- Create, read, list -----------------------------------------------------------------------------


def test_create_answers_202_and_the_snapshot_completes(
    operator, data_volume, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api(operator).post(
            SNAPSHOTS,
            {"volume": str(data_volume.pk), "name": "before", "tags": {"env": "prod"}},
            format="json",
        )

    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["name"], body["state"], body["kind"], body["tags"]) == (
        "before",
        "creating",
        "volume",
        {"env": "prod"},
    )
    assert (
        body["step"] == "queued for the hypervisor worker" and body["consistency_requested"] == "application"
    )
    detail = api(operator).get(f"{SNAPSHOTS}{body['id']}/").json()
    assert detail["state"] == "available" and detail["step"] == ""
    assert (detail["consistency_achieved"], detail["consistency_reason"]) == ("application", work.AT_REST)
    (disk,) = detail["disks"]
    snapshot_disk = Snapshot.objects.get(pk=body["id"]).disks.get()
    assert disk == {
        "id": str(snapshot_disk.pk),
        "volume": str(data_volume.pk),
        "volume_name": "data-01",
        "device": "",
        "bootable": False,
        "size_bytes": 16 * 2**20,
        "checksum": snapshot_disk.checksum,
        "layer": str(snapshot_disk.layer_id),
        "parent_layer": None,
    }
    assert len(disk["checksum"]) == 64
    assert (detail["billed_bytes"], detail["reclaimable_bytes"], detail["restores"]) == (0, 0, [])


def test_vm_snapshot_shows_the_definition_without_domain_xml_and_layer_parents(
    run, operator, make_vm, prod, django_capture_on_commit_callbacks
):
    vm = make_vm(prod, "db-01")
    run(services.create_snapshot, actor=operator, vm=vm, name="first")
    with django_capture_on_commit_callbacks(execute=True):
        created = api(operator).post(SNAPSHOTS, {"vm": str(vm.pk), "consistency": "crash"}, format="json")

    detail = api(operator).get(f"{SNAPSHOTS}{created.json()['id']}/").json()
    assert detail["kind"] == "vm" and detail["vm"] == str(vm.pk) and detail["vm_name"] == "db-01"
    assert detail["name"].startswith("db-01-")
    assert detail["vm_definition"]["flavor"] == "std-2x4" and "domain_xml" not in detail["vm_definition"]
    (disk,) = detail["disks"]
    first = Snapshot.objects.get(name="first").disks.get()
    assert (disk["device"], disk["bootable"], disk["parent_layer"]) == ("vda", True, str(first.layer_id))


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({}, "volume", "Snapshot either one volume or one VM."),
        ({"volume": "not-a-uuid"}, "volume", "volume: Must be a valid UUID."),
        ({"volume": "00000000-0000-0000-0000-000000000000"}, "volume", "There is no volume"),
        ({"vm": "00000000-0000-0000-0000-000000000000"}, "vm", "There is no VM"),
        ({"volume": "data", "consistency": "eventual"}, "consistency", "is not a valid choice"),
        ({"volume": "data", "tags": {"Bad Key": "x"}}, "tags", "Tag key 'Bad Key' is not valid"),
    ],
)
def test_bad_creates_are_400_naming_the_field(operator, data_volume, payload, field, message):
    if payload.get("volume") == "data":
        payload["volume"] = str(data_volume.pk)

    response = api(operator).post(SNAPSHOTS, payload, format="json")

    assert response.status_code == 400
    assert response.json()["field"] == field and message in response.json()["message"], response.json()
    assert not Snapshot.objects.exists()


def test_a_volume_of_another_account_is_not_found_for_create(charlie, data_volume):
    response = api(charlie).post(SNAPSHOTS, {"volume": str(data_volume.pk)}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "code": "InvalidRequest",
        "message": f"There is no volume {data_volume.pk} that you can see.",
        "field": "volume",
    }
    assert AuditEntry.objects.filter(actor_name="charlie", outcome="refused").exists()


@pytest.fixture
def history(run, operator, make_vm, prod, data_volume):
    """Policy snapshots of db-01 and web-01 over two days, and a tagged manual one of data-01."""
    db01, web01 = make_vm(prod, "db-01"), make_vm(prod, "web-01")
    policy = {"origin": "policy", "policy_name": "acme-prod-default"}
    queued(operator, timedelta(days=2), vm=db01, name="db-old", **policy)
    queued(operator, timedelta(hours=1), vm=db01, name="db-new", **policy)
    queued(operator, timedelta(hours=2), vm=web01, name="web-new", **policy)
    queued(operator, timedelta(hours=3), vm=web01, name="web-other-policy", origin="policy", policy_name="x")
    run(
        services.create_snapshot, actor=operator, volume=data_volume, name="data-manual", tags={"env": "prod"}
    )
    return {"db-01": db01, "web-01": web01}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["data-manual", "db-new", "web-new", "web-other-policy", "db-old"]),
        ("?since=24h", ["data-manual", "db-new", "web-new", "web-other-policy"]),
        ("?policy=acme-prod-default&since=24h", ["db-new", "web-new"]),
        ("?vm=db-01", ["db-new", "db-old"]),
        ("?vm=db-01&latest=1", ["db-new"]),
        ("?latest=1&vm=web-01", ["web-new"]),
        ("?latest=2", ["data-manual", "db-new"]),
        ("?tag=env=prod", ["data-manual"]),
        ("?state=available", ["data-manual"]),
        ("?state=creating&since=150m", ["db-new", "web-new"]),
        ("?volume=data-01", ["data-manual"]),
        ("?volume=db-01-boot", ["db-new", "db-old"]),
        ("?origin=manual", ["data-manual"]),
        ("?kind=volume", ["data-manual"]),
        ("?project=acme/prod&region=bd-dha-1&latest=1", ["data-manual"]),
        ("?project=acme/sandbox", []),
        ("?region=bd-ctg-1", []),
    ],
)
def test_list_filters_newest_first(operator, history, query, expected):
    assert names(api(operator).get(SNAPSHOTS + query)) == expected


def test_vm_and_volume_filters_take_ids_too(operator, history, data_volume):
    db01 = history["db-01"]
    assert names(api(operator).get(f"{SNAPSHOTS}?vm={db01.pk}&latest=1")) == ["db-new"]
    assert names(api(operator).get(f"{SNAPSHOTS}?volume={data_volume.pk}")) == ["data-manual"]


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("since=yesterday", "since", "'yesterday' is neither a duration"),
        ("state=stuck", "state", "Select a valid choice"),
        ("status=error", "status", "The status filter is now called state: send ?state=error."),
        ("latest=0", "latest", "greater than or equal to 1"),
        ("latest=many", "latest", "whole number"),
        ("tag=env", "tag", "key=value"),
    ],
)
def test_a_bad_filter_is_400_naming_it(operator, query, field, message):
    response = api(operator).get(f"{SNAPSHOTS}?{query}")

    assert response.status_code == 400
    assert response.json()["field"] == field and message in response.json()["message"], response.json()


def test_list_query_count_does_not_grow_with_the_snapshots(
    operator, make_vm, prod, data_volume, django_assert_max_num_queries
):
    sources = [{"vm": make_vm(prod, "db-01")}, {"volume": data_volume}]
    for n in range(3):
        queued(operator, **sources[n % 2])
    with CaptureQueriesContext(connection) as three:
        assert len(names(api(operator).get(SNAPSHOTS))) == 3
    for n in range(27):
        queued(operator, **sources[n % 2])

    with django_assert_max_num_queries(len(three)):
        assert len(names(api(operator).get(SNAPSHOTS))) == 30


# --- Restore, roll-back, delete, tags, retry --------------------------------------------------------


def test_restore_to_a_new_volume_records_time_to_restore(operator, taken, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api(operator).post(
            f"{SNAPSHOTS}{taken.pk}/restore/", {"name": "data-01-copy"}, format="json"
        )

    assert response.status_code == 202, response.json()
    started = response.json()
    assert (started["kind"], started["name"], started["state"]) == ("volume", "data-01-copy", "restoring")
    assert started["snapshot"] == str(taken.pk) and started["volume"] and started["vm"] is None
    restore = api(operator).get(f"/api/v1/compute/restores/{started['id']}/").json()
    assert restore["state"] == "done" and restore["seconds"] >= 0 and restore["warnings"] == []
    detail = api(operator).get(f"{SNAPSHOTS}{taken.pk}/").json()
    assert [r["id"] for r in detail["restores"]] == [started["id"]]
    listed = api(operator).get(f"/api/v1/compute/restores/?snapshot={taken.pk}").json()["results"]
    assert [r["name"] for r in listed] == ["data-01-copy"]


def test_restore_of_a_disk_that_is_not_the_snapshots_is_400(operator, taken, run, make_vm, prod):
    other = run(services.create_snapshot, actor=operator, vm=make_vm(prod, "db-01"))

    response = api(operator).post(
        f"{SNAPSHOTS}{taken.pk}/restore/", {"name": "x", "disk": str(other.disks.get().pk)}, format="json"
    )

    assert response.status_code == 400 and response.json()["field"] == "disk"


def test_restore_to_vm_warns_before_a_likely_kernel_panic(run, operator, make_vm, prod):
    snapshot = run(services.create_snapshot, actor=operator, vm=make_vm(prod, "batch-01", flavor="bm-c1"))
    url = f"{SNAPSHOTS}{snapshot.pk}/restore-vm/"
    payload = {"name": "batch-01-drill", "vpc": "sandbox-vpc", "flavor": "std-2x4"}

    refused = api(operator).post(url, payload, format="json")

    assert refused.status_code == 409 and refused.json()["code"] == "RestoreNeedsConfirmation"
    assert "Kernel panic on init is likely" in refused.json()["message"]
    accepted = api(operator).post(url, {**payload, "acknowledge_warnings": True}, format="json")
    assert accepted.status_code == 202 and accepted.json()["kind"] == "vm" and accepted.json()["vm"]
    assert "Kernel panic" in accepted.json()["warnings"][0]


def test_rollback_needs_the_right_confirmation_and_answers_the_safety_snapshot(
    operator, snap_admin, taken, django_capture_on_commit_callbacks
):
    url = f"{SNAPSHOTS}{taken.pk}/rollback/"
    for payload in ({}, {"confirm": "yes"}):
        refused = api(snap_admin).post(url, payload, format="json")
        assert refused.status_code == 400 and refused.json()["field"] == "confirm"
        assert "Type 'data-01' to confirm" in refused.json()["message"]
    assert api(operator).post(url, {"confirm": "data-01"}, format="json").status_code == 403

    with django_capture_on_commit_callbacks(execute=True):
        response = api(snap_admin).post(url, {"confirm": "data-01"}, format="json")

    assert response.status_code == 202, response.json()
    safety = response.json()
    assert (safety["origin"], safety["rollback_of"]) == ("safety", str(taken.pk))
    assert safety["name"].startswith("safety-before-rollback-") and safety["expires_at"]
    assert Snapshot.objects.get(pk=safety["id"]).state == Snapshot.State.AVAILABLE


def test_delete_without_the_typed_name_is_refused(operator, taken):
    response = api(operator).delete(f"{SNAPSHOTS}{taken.pk}/?confirm=wrong")

    assert response.status_code == 400
    assert response.json() == {
        "code": "InvalidRequest",
        "message": "Deleting a snapshot destroys its point in time for good. Type 'taken' to confirm.",
        "field": "confirm",
    }
    assert Snapshot.objects.get(pk=taken.pk).state == Snapshot.State.AVAILABLE


def test_delete_answers_202_and_the_snapshot_goes(operator, taken, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api(operator).delete(f"{SNAPSHOTS}{taken.pk}/?confirm=taken")

    assert response.status_code == 202 and response.json()["state"] == "deleting"
    assert api(operator).get(f"{SNAPSHOTS}{taken.pk}/").status_code == 404
    assert not Snapshot.objects.filter(pk=taken.pk).exists()


def test_a_creating_snapshot_cannot_be_deleted_yet(operator, data_volume):
    snapshot = queued(operator, volume=data_volume)

    response = api(operator).delete(f"{SNAPSHOTS}{snapshot.pk}/?confirm={snapshot.name}")

    assert response.status_code == 409 and response.json()["code"] == "Conflict"


def test_tags_are_added_and_removed(operator, taken):
    Snapshot.objects.filter(pk=taken.pk).update(tags={"env": "prod", "owner": "dba"})

    response = api(operator).post(
        f"{SNAPSHOTS}{taken.pk}/tags/",
        {"add": {"ticket": "OPS-7", "env": "stage"}, "remove": ["owner"]},
        format="json",
    )

    assert response.status_code == 200 and response.json()["tags"] == {"env": "stage", "ticket": "OPS-7"}


def test_retry_after_a_failure_completes_the_snapshot(
    operator, data_volume, django_capture_on_commit_callbacks
):
    snapshot = queued(operator, volume=data_volume)
    work.fail(str(snapshot.pk), "hypervisor worker lost")
    diagnosed = api(operator).get(f"{SNAPSHOTS}{snapshot.pk}/diagnose/").json()
    assert diagnosed["findings"][0]["cause"] == "The operation failed"
    assert diagnosed["findings"][0]["detail"] == "hypervisor worker lost"

    with django_capture_on_commit_callbacks(execute=True):
        response = api(operator).post(f"{SNAPSHOTS}{snapshot.pk}/retry/")

    assert response.status_code == 202 and response.json()["state"] == "creating"
    assert Snapshot.objects.get(pk=snapshot.pk).state == Snapshot.State.AVAILABLE
    again = api(operator).post(f"{SNAPSHOTS}{snapshot.pk}/retry/")
    assert again.status_code == 409 and "nothing to retry" in again.json()["message"]


# --- Diagnose ---------------------------------------------------------------------------------------


def test_diagnose_says_what_a_creating_snapshot_waits_for(operator, data_volume):
    snapshot = queued(operator, volume=data_volume)

    response = api(operator).get(f"{SNAPSHOTS}{snapshot.pk}/diagnose/")

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["state"], body["step"]) == (
        str(snapshot.pk),
        "creating",
        "queued for the hypervisor worker",
    )
    assert body["findings"] == [
        {
            "cause": "Snapshot backend slow",
            "check": "Console → Platform → Backend status",
            "fix": "Wait, or open a ticket if sustained",
            "detail": "queued 0.0 min ago; no worker has reported for over 90 s",
        }
    ]


def test_diagnose_of_an_available_snapshot_finds_nothing_waiting(operator, taken):
    body = api(operator).get(f"{SNAPSHOTS}{taken.pk}/diagnose/").json()
    assert (body["state"], body["findings"]) == ("available", [])


# --- Who may do what --------------------------------------------------------------------------------


def test_an_outsider_gets_404_for_everything_and_an_empty_list(charlie, taken):
    client = api(charlie)
    assert names(client.get(SNAPSHOTS)) == []
    assert client.get(f"{SNAPSHOTS}{taken.pk}/").status_code == 404
    assert client.get(f"{SNAPSHOTS}{taken.pk}/diagnose/").status_code == 404
    for action in ("restore", "restore-vm", "rollback", "tags", "retry"):
        response = client.post(f"{SNAPSHOTS}{taken.pk}/{action}/", {"name": "x", "vpc": "v"}, format="json")
        assert response.status_code == 404 and response.json()["code"] == "NotFound", action
    assert client.delete(f"{SNAPSHOTS}{taken.pk}/").status_code == 404
    assert client.get("/api/v1/compute/restores/").json()["results"] == []
    assert Snapshot.objects.get(pk=taken.pk).state == Snapshot.State.AVAILABLE


def test_a_viewer_reads_but_every_write_is_403(viewer, taken, data_volume):
    client = api(viewer)
    assert names(client.get(SNAPSHOTS)) == ["taken"]
    assert client.get(f"{SNAPSHOTS}{taken.pk}/").status_code == 200
    writes = [
        client.post(SNAPSHOTS, {"volume": str(data_volume.pk)}, format="json"),
        client.post(f"{SNAPSHOTS}{taken.pk}/restore/", {"name": "copy"}, format="json"),
        client.post(f"{SNAPSHOTS}{taken.pk}/tags/", {"add": {"a": "b"}}, format="json"),
        client.post(f"{SNAPSHOTS}{taken.pk}/retry/"),
        client.delete(f"{SNAPSHOTS}{taken.pk}/"),
        client.post(
            "/api/v1/compute/snapshot-limits/", {"volume": str(data_volume.pk), "limit": 5, "ticket": "T"}
        ),
    ]
    assert [(w.status_code, w.json()["code"]) for w in writes] == [(403, "PermissionDenied")] * len(writes)
    assert Snapshot.objects.count() == 1 and not Restore.objects.exists()


# --- Limits -----------------------------------------------------------------------------------------


def test_an_admin_raises_a_limit_with_a_ticket(operator, snap_admin, data_volume):
    url = "/api/v1/compute/snapshot-limits/"
    by_volume = api(snap_admin).post(url, {"volume": str(data_volume.pk), "limit": 150, "ticket": "OPS-1"})
    by_project = api(snap_admin).post(url, {"project": "acme/prod", "limit": 120, "ticket": "OPS-2"})
    no_ticket = api(snap_admin).post(url, {"project": "acme/prod", "limit": 120, "ticket": " "})
    unseen = api(snap_admin).post(url, {"project": "globex/main", "limit": 120, "ticket": "OPS-3"})

    assert by_volume.status_code == 201, by_volume.json()
    assert (by_volume.json()["volume"], by_volume.json()["limit"], by_volume.json()["set_by"]) == (
        str(data_volume.pk),
        150,
        "sam",
    )
    assert by_project.status_code == 201 and by_project.json()["project"] == "acme/prod"
    assert (no_ticket.status_code, no_ticket.json()["field"]) == (400, "ticket")
    assert (unseen.status_code, unseen.json()["field"]) == (400, "project")
    assert services.snapshot_limit(data_volume) == 150 and SnapshotLimit.objects.count() == 2


def test_a_failed_restore_is_retried_or_deleted_by_its_owner_only(
    operator, charlie, taken, django_capture_on_commit_callbacks
):
    restore = services.restore_to_volume(actor=operator, snapshot=taken, name="data-01-copy")
    work.fail_restore(str(restore.pk), "host went away")
    assert api(charlie).post(f"/api/v1/compute/restores/{restore.pk}/retry/").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        response = api(operator).post(f"/api/v1/compute/restores/{restore.pk}/retry/")
    assert response.status_code == 202
    assert Restore.objects.get(pk=restore.pk).state == Restore.State.DONE

    second = services.restore_to_volume(actor=operator, snapshot=taken, name="data-01-copy2")
    work.fail_restore(str(second.pk), "host went away")
    assert api(charlie).delete(f"/api/v1/compute/restores/{second.pk}/").status_code == 404
    assert api(operator).delete(f"/api/v1/compute/restores/{second.pk}/").status_code == 204
    assert not Restore.objects.filter(pk=second.pk).exists()
