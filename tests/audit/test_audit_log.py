from __future__ import annotations

import csv
import io

import pytest
from django.contrib.admin.sites import site
from django.urls import reverse

from clouddigit.audit.models import AuditEntry, ImmutableEntry
from clouddigit.compute import services
from clouddigit.errors import PermissionRefused
from iam.services import grant_role


@pytest.fixture
def auditor(django_user_model, acme):
    django_user_model.objects.create_user("audrey", password="audrey-pass")
    grant_role(actor=None, role="auditor", account=acme, username="audrey")
    return django_user_model.objects.get(username="audrey")


def test_entries_cannot_be_changed_or_deleted(alice):
    entry = AuditEntry.objects.filter(action="iam.role.grant").first()
    entry.message = "tampered"
    with pytest.raises(ImmutableEntry):
        entry.save()
    with pytest.raises(ImmutableEntry):
        entry.delete()
    with pytest.raises(ImmutableEntry):
        AuditEntry.objects.all().update(message="tampered")
    with pytest.raises(ImmutableEntry):
        AuditEntry.objects.all().delete()
    admin = site._registry[AuditEntry]
    assert not admin.has_change_permission(None) and not admin.has_delete_permission(None)


def test_a_state_change_records_who_what_where_and_from_which_address(client, alice, make_vm, prod):
    vm = make_vm(prod, "db-01")
    client.force_login(alice)
    client.post(reverse("compute:vm-start", args=[vm.pk]), REMOTE_ADDR="203.0.113.7")
    entry = AuditEntry.objects.get(action="compute.vm.start")
    assert (entry.actor_name, entry.outcome, entry.target_id, entry.project) == (
        "alice",
        "success",
        str(vm.pk),
        prod,
    )
    assert entry.source_ip == "203.0.113.7"


def test_a_refusal_is_recorded_although_nothing_else_is(bob, make_vm, prod):
    vm = make_vm(prod, "db-01")
    with pytest.raises(PermissionRefused):
        services.stop_vm(actor=bob, vm=vm)
    entry = AuditEntry.objects.get(action="compute.vm.stop")
    assert entry.outcome == "refused" and "operate_vms" in entry.message


def test_forwarded_address_is_trusted_only_behind_configured_proxies(client, alice, settings):
    client.post(
        reverse("login"),
        {"username": "alice", "password": "wrong"},
        REMOTE_ADDR="10.0.0.1",
        HTTP_X_FORWARDED_FOR="198.51.100.9",
    )
    settings.TRUSTED_PROXY_COUNT = 1
    client.post(
        reverse("login"),
        {"username": "alice", "password": "wrong"},
        REMOTE_ADDR="10.0.0.1",
        HTTP_X_FORWARDED_FOR="198.51.100.9",
    )
    ips = list(
        AuditEntry.objects.filter(action="auth.sign-in").order_by("id").values_list("source_ip", flat=True)
    )
    assert ips == ["10.0.0.1", "198.51.100.9"]


def test_auditor_sees_the_account_log_and_exports_it_as_csv(
    client, auditor, alice, charlie, make_vm, prod, globex_main
):
    make_vm(prod, "db-01")
    make_vm(globex_main, "gx-01")
    client.force_login(auditor)
    page = client.get(reverse("audit:entries")).content.decode()
    assert "compute.vm.create" in page and "db-01" in page and "gx-01" not in page

    response = client.get(reverse("audit:export") + "?action=iam.role")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert response["Content-Type"].startswith("text/csv")
    assert {row["action"] for row in rows} == {"iam.role.grant"}
    assert {"alice", "audrey"} <= {row["target"].split(" for user ")[-1].split(" ")[0] for row in rows}


def test_a_publisher_sees_only_its_own_sign_ins(client, bob, alice, make_vm, prod):
    make_vm(prod, "db-01")
    client.force_login(bob)
    page = client.get(reverse("audit:entries")).content.decode()
    assert "compute.vm.create" not in page and "auth.sign-in" in page


def test_a_nul_character_the_user_typed_is_stored_written_out(alice, data_volume, run):
    """PostgreSQL refuses NUL in text and JSON: a refusal that records what was typed must not become a
    500 (schemathesis found `DELETE /snapshots/{id}/?confirm=%00` on PostgreSQL)."""
    from clouddigit.errors import InvalidRequest
    from snapshots import services as snapshots

    snapshot = run(snapshots.create_snapshot, actor=alice, volume=data_volume, name="nul-test")
    with pytest.raises(InvalidRequest):
        snapshots.delete_snapshot(actor=alice, snapshot=snapshot, confirm="a\x00b")
    entry = AuditEntry.objects.filter(action="snapshot.delete").latest("at")
    assert entry.outcome == AuditEntry.Outcome.REFUSED
    assert entry.detail["confirm"] == "a\\x00b"
    assert "\x00" not in entry.message + entry.target_name
