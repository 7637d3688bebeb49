"""/api/v1/compute/snapshot-policies/: list, read, apply from YAML, export the canonical YAML."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from clouddigit.audit.models import AuditEntry
from policies import services
from policies.models import Policy
from policies.spec import parse
from tests.policies.test_spec import EXAMPLE

POLICIES = "/api/v1/compute/snapshot-policies/"
APPLY = f"{POLICIES}apply/"


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def applied(prod):
    return services.apply_policy(actor=None, project=prod, text=EXAMPLE)


def test_apply_creates_the_policy_then_replaces_it(snap_admin, prod):
    created = api(snap_admin).post(APPLY, {"project": "acme/prod", "yaml": EXAMPLE}, format="json")

    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["project"] == "acme/prod" and body["name"] == "acme-prod-default"
    assert body["schedule"] == {"daily": "02:00 BDT", "weekly": "Sun 03:00 BDT"}
    assert body["retention"] == {"daily": 7, "weekly": 4}
    assert body["scope"] == {"vm_tags": ["env=prod"]}
    assert body["applied_by"] == "sam"

    changed = EXAMPLE.replace("daily: 7", "daily: 14")
    replaced = api(snap_admin).post(APPLY, {"project": str(prod.pk), "yaml": changed}, format="json")

    assert replaced.status_code == 200, replaced.json()
    assert replaced.json()["id"] == body["id"] and replaced.json()["retention"]["daily"] == 14
    assert Policy.objects.get().source == changed


def test_an_invalid_policy_is_a_400_naming_the_line_and_field_and_nothing_is_saved(alice, prod):
    # Leading blank lines count: the text reaches the parser as sent.
    text = "\n\n" + EXAMPLE.replace("02:00 BDT", "02:00 PST")

    response = api(alice).post(APPLY, {"project": "acme/prod", "yaml": text}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "code": "InvalidPolicy",
        "message": "line 5: schedule.daily: unknown time zone 'PST'; use BDT or UTC (BDT is Asia/Dhaka)",
        "field": "schedule.daily",
    }
    assert not Policy.objects.exists()
    refusal = AuditEntry.objects.get(action="policy.apply")
    assert (refusal.outcome, refusal.actor_name) == ("refused", "alice")
    assert "line 5: schedule.daily" in refusal.message


def test_a_project_the_caller_cannot_see_is_a_400_naming_project(charlie, prod):
    response = api(charlie).post(APPLY, {"project": "acme/prod", "yaml": EXAMPLE}, format="json")

    assert response.status_code == 400
    assert response.json()["field"] == "project"
    assert not Policy.objects.exists()


def test_an_operator_may_read_policies_but_not_apply_them(operator, applied):
    assert [item["name"] for item in api(operator).get(POLICIES).json()["results"]] == ["acme-prod-default"]

    response = api(operator).post(APPLY, {"project": "acme/prod", "yaml": EXAMPLE}, format="json")

    assert response.status_code == 403
    assert response.json()["code"] == "PermissionDenied"
    assert "manage_policies" in response.json()["message"]


def test_lists_show_only_visible_policies_and_filter_by_project_and_name(
    alice, charlie, prod, sandbox, globex_main, django_assert_max_num_queries
):
    for project in (prod, sandbox):
        services.apply_policy(actor=None, project=project, text=EXAMPLE)
    services.apply_policy(actor=None, project=prod, text=EXAMPLE.replace("acme-prod-default", "weekly-only"))
    services.apply_policy(actor=None, project=globex_main, text=EXAMPLE.replace("acme-prod", "globex"))

    with django_assert_max_num_queries(4):
        everything = api(alice).get(POLICIES).json()["results"]
    assert [(item["project"], item["name"]) for item in everything] == [
        ("acme/prod", "acme-prod-default"),
        ("acme/prod", "weekly-only"),
        ("acme/sandbox", "acme-prod-default"),
    ]
    in_prod = api(alice).get(POLICIES, {"project": "acme/prod", "name": "default"}).json()["results"]
    assert [(item["project"], item["name"]) for item in in_prod] == [("acme/prod", "acme-prod-default")]
    assert [item["name"] for item in api(charlie).get(POLICIES).json()["results"]] == ["globex-default"]
    assert api(charlie).get(f"{POLICIES}{everything[0]['id']}/").status_code == 404


def test_export_answers_the_canonical_yaml_as_text(alice, charlie, applied):
    response = api(alice).get(f"{POLICIES}{applied.pk}/export/")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/yaml; charset=utf-8"
    assert parse(response.content.decode()) == applied.parsed
    assert response.content.decode() == applied.parsed.to_yaml()
    asked_for_yaml = api(alice).get(f"{POLICIES}{applied.pk}/export/", HTTP_ACCEPT="text/yaml")
    assert asked_for_yaml.status_code == 200 and asked_for_yaml.content == response.content
    hidden = api(charlie).get(f"{POLICIES}{applied.pk}/export/")
    assert hidden.status_code == 404 and hidden.json()["code"] == "NotFound"
