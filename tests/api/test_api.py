from __future__ import annotations

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from clouddigit.audit.models import AuditEntry
from clouddigit.compute.models import VM
from iam.models import RoleBinding
from iam.services import add_member


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def fleet(make_vm, prod, sandbox, globex_main):
    return [
        make_vm(prod, "db-01", tags={"env": "prod"}),
        make_vm(sandbox, "dev-01"),
        make_vm(globex_main, "gx-01"),
    ]


def test_anonymous_gets_401_with_the_error_shape(db):
    response = api().get("/api/v1/compute/vms/")
    assert response.status_code == 401
    assert response.json()["code"] == "NotAuthenticated"
    assert response["WWW-Authenticate"].startswith("Token")


def test_drf_create_token_works_for_the_cli(alice, capsys):
    call_command("drf_create_token", "alice")
    key = capsys.readouterr().out.split()[2]
    assert Token.objects.get(user=alice).key == key


def test_lists_are_filtered_by_permission_and_paginated(alice, bob, charlie, fleet):
    body = api(alice).get("/api/v1/compute/vms/").json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert sorted(vm["name"] for vm in body["results"]) == ["db-01", "dev-01"]
    assert [vm["name"] for vm in api(bob).get("/api/v1/compute/vms/").json()["results"]] == ["db-01"]
    assert [vm["name"] for vm in api(charlie).get("/api/v1/compute/vms/").json()["results"]] == ["gx-01"]
    assert [p["path"] for p in api(bob).get("/api/v1/projects/").json()["results"]] == ["acme/prod"]


def test_filters_by_project_and_tag(alice, fleet):
    names = [
        vm["name"] for vm in api(alice).get("/api/v1/compute/vms/?project=acme/sandbox").json()["results"]
    ]
    assert names == ["dev-01"]
    tagged = api(alice).get("/api/v1/compute/vms/?tag=env=prod").json()["results"]
    assert [vm["name"] for vm in tagged] == ["db-01"]


def test_a_bad_filter_names_the_field(alice, fleet):
    response = api(alice).get("/api/v1/compute/vms/?tag=oops")
    assert response.status_code == 400
    assert response.json()["field"] == "tag" and "key=value" in response.json()["message"]


def test_objects_of_another_account_are_404(charlie, fleet):
    db01 = fleet[0]
    assert api(charlie).get(f"/api/v1/compute/vms/{db01.pk}/").status_code == 404
    response = api(charlie).post(f"/api/v1/compute/vms/{db01.pk}/start/")
    assert response.status_code == 404 and response.json()["code"] == "NotFound"
    assert AuditEntry.objects.filter(action="api.vm.start", outcome="refused", actor_name="charlie").exists()


def test_start_through_the_api(alice, fleet, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api(alice).post(f"/api/v1/compute/vms/{fleet[0].pk}/start/")
    assert response.status_code == 202 and response.json()["state"] == "starting"
    fleet[0].refresh_from_db()
    assert fleet[0].state == VM.State.RUNNING


def test_a_weaker_role_is_refused_for_writes(bob, fleet):
    response = api(bob).post(f"/api/v1/compute/vms/{fleet[0].pk}/start/")
    assert response.status_code == 403 and response.json()["code"] == "PermissionDenied"


def test_grant_and_revoke_through_the_api(alice, prod, django_user_model):
    django_user_model.objects.create_user("dave")
    add_member(actor=None, account=prod.account, username="dave")
    response = api(alice).post(
        "/api/v1/iam/role-bindings/",
        {"role": "image.publisher", "user": "dave", "project": "acme/prod"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["project"] == "acme/prod" and "publish_images" in response.json()["permissions"]
    listed = api(alice).get("/api/v1/iam/role-bindings/?user=dave").json()["results"]
    assert [b["role"] for b in listed] == ["image.publisher"]

    assert api(alice).delete(f"/api/v1/iam/role-bindings/{listed[0]['id']}/").status_code == 204
    assert not RoleBinding.objects.filter(user__username="dave").exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"role": "image.god", "user": "dave", "project": "acme/prod"}, "role"),
        ({"role": "image.viewer", "user": "dave", "project": "acme/nope"}, "project"),
        ({"role": "image.viewer", "user": "ghost", "project": "acme/prod"}, "user"),
        ({"role": "image.viewer", "user": "dave"}, "account"),
    ],
)
def test_malformed_grants_are_400_naming_the_field_and_audited(
    alice, prod, django_user_model, payload, field
):
    django_user_model.objects.create_user("dave")
    add_member(actor=None, account=prod.account, username="dave")
    response = api(alice).post("/api/v1/iam/role-bindings/", payload, format="json")
    assert response.status_code == 400
    assert response.json()["field"] == field, response.json()
    assert not RoleBinding.objects.filter(user__username="dave").exists()
    assert AuditEntry.objects.filter(outcome="refused", actor_name="alice").exists()


def test_malformed_json_is_a_clear_400(alice):
    response = api(alice).post("/api/v1/iam/role-bindings/", "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "ParseError"


def test_the_audit_log_has_no_write_routes(alice):
    entry_id = AuditEntry.objects.first().pk
    client = api(alice)
    assert client.delete(f"/api/v1/audit/entries/{entry_id}/").status_code == 405
    assert client.patch(f"/api/v1/audit/entries/{entry_id}/", {"message": "x"}).status_code == 405
    assert client.post("/api/v1/audit/entries/", {"message": "x"}).status_code == 405
    export = client.get("/api/v1/audit/entries/export/")
    assert export.status_code == 200 and b"iam.role.grant" in b"".join(export.streaming_content)


def test_schema_and_docs(alice, client):
    schema = api(alice).get("/api/v1/schema/")
    assert schema.status_code == 200 and b"/api/v1/compute/vms/" in schema.content
    client.force_login(alice)
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
    assert b"cdn" not in docs.content.lower()
