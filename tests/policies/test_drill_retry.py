"""Retry and delete of a failed or lost restore drill: on the policy's page and through the API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from clouddigit.audit.models import AuditEntry
from iam.services import grant_role
from policies import drills
from policies.models import Drill, Policy
from policies.services import apply_policy
from tests.policies.test_drills import db01  # noqa: F401  (a fixture)
from tests.policies.test_scheduler import POLICY

DRILLS = "/api/v1/compute/restore-drills/"
DID_NOT_BOOT = "the sandbox VM did not boot: domain is shut off"


@pytest.fixture
def policy(prod) -> Policy:
    return apply_policy(actor=None, project=prod, text=POLICY.format(when_stopped="skip"))


@pytest.fixture
def viewer(django_user_model, prod):
    django_user_model.objects.create_user("vic")
    grant_role(actor=None, role="snapshot.viewer", account=prod.account, project=prod, username="vic")
    return django_user_model.objects.get(username="vic")


def _drill(policy: Policy, vm, **fields) -> Drill:
    """A drill row as a worker left it (failed, unless told otherwise)."""
    snapshot = drills.latest_vm_snapshot(vm)
    defaults = {
        "policy": policy,
        "project": policy.project,
        "vm": vm,
        "vm_name": vm.name,
        "snapshot": snapshot,
        "snapshot_name": snapshot.name,
        "requested_by": "system",
        "state": Drill.State.FAILED,
        "error": DID_NOT_BOOT,
        "finished_at": timezone.now(),
    }
    return Drill.objects.create(**{**defaults, **fields})


def _urls(drill: Drill) -> tuple[str, str]:
    return reverse("policies:drill-retry", args=[drill.pk]), reverse("policies:drill-delete", args=[drill.pk])


def _page(client, policy: Policy) -> str:
    return client.get(reverse("policies:detail", args=[policy.pk])).content.decode()


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


# --- Console ----------------------------------------------------------------------------------------


def test_a_failed_drill_shows_why_and_its_owner_runs_it_again(
    client,
    alice,
    policy,
    db01,  # noqa: F811
    django_capture_on_commit_callbacks,  # noqa: F811
):
    drill = _drill(policy, db01)
    retry_url, delete_url = _urls(drill)
    client.force_login(alice)
    page = _page(client, policy)
    assert DID_NOT_BOOT in page and f'action="{retry_url}"' in page
    assert f'hx-post="{delete_url}" hx-confirm="Delete the failed drill of db-01' in page

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(retry_url)
    assert response["Location"] == reverse("policies:detail", args=[policy.pk]) + "#drills"
    drill.refresh_from_db()
    assert (drill.state, drill.error) == (Drill.State.PASSED, ""), drill.checks
    page = _page(client, policy)
    assert retry_url not in page and delete_url not in page and DID_NOT_BOOT not in page


def test_deleting_a_failed_drill_removes_it_from_the_history(client, alice, policy, db01):  # noqa: F811
    drill = _drill(policy, db01)
    client.force_login(alice)
    response = client.post(_urls(drill)[1], {"confirmed": "yes"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 204
    assert response["HX-Location"] == reverse("policies:detail", args=[policy.pk]) + "#drills"
    assert not Drill.objects.filter(pk=drill.pk).exists()
    assert AuditEntry.objects.filter(action="policy.drill.delete", outcome="success").exists()


def test_a_lost_drill_offers_retry_but_not_delete(client, alice, policy, db01):  # noqa: F811
    lost = _drill(
        policy,
        db01,
        state=Drill.State.RUNNING,
        error="",
        finished_at=None,
        claimed_by="host:1:abc",
        lease_until=timezone.now() - timedelta(minutes=2),
    )
    client.force_login(alice)
    page = _page(client, policy)
    retry_url, delete_url = _urls(lost)
    assert retry_url in page and delete_url not in page and "worker stopped answering" in page


def test_a_viewer_sees_the_reason_but_no_buttons_and_is_refused(client, viewer, policy, db01):  # noqa: F811
    drill = _drill(policy, db01)
    retry_url, delete_url = _urls(drill)
    client.force_login(viewer)
    page = _page(client, policy)
    assert DID_NOT_BOOT in page and retry_url not in page and delete_url not in page
    refused = client.post(delete_url, {"confirmed": "yes"}, follow=True)
    assert "You may not delete restore drills" in refused.content.decode()
    assert Drill.objects.filter(pk=drill.pk).exists()


def test_an_outsider_gets_404_for_a_drill(client, charlie, policy, db01):  # noqa: F811
    drill = _drill(policy, db01)
    client.force_login(charlie)
    for url in _urls(drill):
        assert client.post(url).status_code == 404
    assert Drill.objects.get(pk=drill.pk).state == Drill.State.FAILED


# --- API --------------------------------------------------------------------------------------------


def test_drills_are_listed_with_their_reason_to_whoever_sees_the_project(
    alice,
    charlie,
    policy,
    db01,  # noqa: F811
):
    failed = _drill(policy, db01)
    _drill(policy, db01, state=Drill.State.PASSED, error="", seconds=1.5)
    listed = api(alice).get(DRILLS, {"state": "failed"}).json()["results"]
    assert [item["id"] for item in listed] == [str(failed.pk)]
    assert listed[0]["error"] == DID_NOT_BOOT and listed[0]["policy"] == "acme-prod-default"
    assert listed[0]["project"] == "acme/prod" and listed[0]["vm_name"] == "db-01"
    assert len(api(alice).get(DRILLS, {"policy": "acme-prod-default"}).json()["results"]) == 2
    assert api(alice).get(DRILLS, {"policy": "other"}).json()["results"] == []
    assert api(charlie).get(DRILLS).json()["results"] == []
    assert api(charlie).get(f"{DRILLS}{failed.pk}/").status_code == 404


def test_the_owner_retries_and_deletes_a_failed_drill_through_the_api(
    operator,
    charlie,
    policy,
    db01,  # noqa: F811
    django_capture_on_commit_callbacks,  # noqa: F811
):
    drill = _drill(policy, db01)
    assert api(charlie).post(f"{DRILLS}{drill.pk}/retry/").status_code == 404
    assert api(charlie).delete(f"{DRILLS}{drill.pk}/").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        response = api(operator).post(f"{DRILLS}{drill.pk}/retry/")
    assert response.status_code == 202 and response.json()["id"] == str(drill.pk)
    assert Drill.objects.get(pk=drill.pk).state == Drill.State.PASSED

    passed = api(operator).delete(f"{DRILLS}{drill.pk}/")
    assert passed.status_code == 409 and "only a failed drill is deleted" in passed.json()["message"]
    failed = _drill(policy, db01)
    assert api(operator).delete(f"{DRILLS}{failed.pk}/").status_code == 204
    assert not Drill.objects.filter(pk=failed.pk).exists()


def test_a_viewer_may_read_drills_but_not_retry_them(viewer, policy, db01):  # noqa: F811
    drill = _drill(policy, db01)
    assert api(viewer).get(f"{DRILLS}{drill.pk}/").json()["error"] == DID_NOT_BOOT
    refused = api(viewer).post(f"{DRILLS}{drill.pk}/retry/")
    assert refused.status_code == 403
    assert Drill.objects.get(pk=drill.pk).state == Drill.State.FAILED
