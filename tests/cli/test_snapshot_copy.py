"""`clouddigit compute snapshot copy` and `POST /api/v1/compute/snapshots/<id>/copy/`, in-process against
a real S3 server (one bucket per region); tasks run right after each request's commit."""

from __future__ import annotations

import json

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from clouddigit.audit.models import AuditEntry
from clouddigit.backends import volumes
from clouddigit.celery import app as celery_app
from clouddigit.compute import services as compute
from iam.services import grant_role
from snapshots import services
from snapshots.models import Snapshot

pytestmark = pytest.mark.django_db
MiB = 2**20


@pytest.fixture
def snapshot(prod, dha, committed, image_stores):
    with committed():
        volume = compute.create_volume(
            actor=None, project=prod, region=dha, name="db-data", size_bytes=16 * MiB
        )
    volumes.write_pattern(volume.path, MiB, 3 * MiB, 0x5A)
    with committed():
        taken = services.create_snapshot(actor=None, volume=volume, name="snap-acme-db-2026-05-11")
    taken.refresh_from_db()
    return taken


def test_the_spec_command_copies_and_prints_the_copy(cli, alice, snapshot):
    result = cli(
        alice, "compute", "snapshot", "copy", "--snapshot", "snap-acme-db-2026-05-11",
        "--source-region", "bd-dha-1", "--target-region", "bd-ctg-1", "--wait", "-o", "json",
    )  # fmt: skip
    assert result.code == 0, result.err
    copy = json.loads(result.out)
    assert copy["state"] == "available" and copy["region"] == "bd-ctg-1"
    assert copy["source_snapshot"] == str(snapshot.pk) and copy["name"] == snapshot.name
    assert copy["bytes_total"] == 4 * MiB and copy["bytes_sent"] == 4 * MiB  # chunk 0 holds MiB 1-3
    shown = cli(alice, "compute", "snapshot", "show", "--snapshot", copy["id"])
    assert "4MiB of 4MiB, 4MiB sent between regions" in shown.out
    restored = cli(
        alice, "compute", "snapshot", "restore", "--snapshot", copy["id"], "--name", "dr-01", "-o", "json"
    )
    assert restored.code == 0, restored.err
    again = cli(
        alice, "compute", "snapshot", "copy", "--snapshot", str(snapshot.pk),
        "--source-region", "bd-dha-1", "--target-region", "bd-ctg-1", "--name", "second", "-o", "json",
    )  # fmt: skip
    assert json.loads(again.out)["bytes_sent"] == 0  # nothing changed: nothing crosses


@pytest.fixture
def errors_stay_on_the_worker():
    """A task's error is recorded on its row and logged, not raised into the request (as on a worker)."""
    celery_app.conf.task_eager_propagates = False
    yield
    celery_app.conf.task_eager_propagates = True


@pytest.mark.usefixtures("errors_stay_on_the_worker")
def test_a_failed_copy_exits_1_with_the_reason(cli, alice, snapshot, settings):
    settings.REGIONS = {
        **settings.REGIONS,
        "bd-ctg-1": {**settings.REGIONS["bd-ctg-1"], "s3_secret_key": "wrong-key-0123456789"},
    }
    result = cli(
        alice, "compute", "snapshot", "copy", "--snapshot", str(snapshot.pk),
        "--source-region", "bd-dha-1", "--target-region", "bd-ctg-1", "--wait",
    )  # fmt: skip
    assert result.code == 1
    assert "ERROR: SnapshotCopyFailed: copy snap-acme-db-2026-05-11" in result.err
    assert "is error" in result.err and "compute snapshot retry --snapshot" in result.err


def test_bad_input_is_refused_with_the_reason(cli, alice, snapshot):
    def copy(*extra):
        return cli(alice, "compute", "snapshot", "copy", "--snapshot", str(snapshot.pk), *extra)

    same = copy("--source-region", "bd-dha-1", "--target-region", "bd-dha-1")
    assert same.code == 1 and "is already in bd-dha-1: choose another region" in same.err
    unknown = copy("--source-region", "bd-dha-1", "--target-region", "bd-xyz-9")
    assert unknown.code == 1 and "Unknown region 'bd-xyz-9'" in unknown.err
    wrong_source = copy("--source-region", "bd-ctg-1", "--target-region", "bd-dha-1")
    assert wrong_source.code == 1 and "is in bd-dha-1, not bd-ctg-1" in wrong_source.err
    assert Snapshot.objects.count() == 1


def test_api_copy_refuses_outsiders_with_404_and_readers_with_403(snapshot, charlie, django_user_model, prod):
    url = f"/api/v1/compute/snapshots/{snapshot.pk}/copy/"
    outsider = APIClient()
    outsider.force_authenticate(charlie)
    assert outsider.post(url, {"target_region": "bd-ctg-1"}, format="json").status_code == 404
    django_user_model.objects.create_user("vera")
    grant_role(actor=None, role="snapshot.viewer", account=prod.account, project=prod, username="vera")
    reader = APIClient()
    reader.force_authenticate(django_user_model.objects.get(username="vera"))
    refused = reader.post(url, {"target_region": "bd-ctg-1"}, format="json")
    assert refused.status_code == 403 and refused.json()["code"]
    assert Snapshot.objects.count() == 1
    assert (
        AuditEntry.objects.filter(action="snapshot.copy", actor_name="vera")
        .exclude(outcome="success")
        .exists()
    )


def test_the_copy_endpoint_is_in_the_schema():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/compute/snapshots/{id}/copy/"]["post"]
    assert "202" in operation["responses"] and "400" in operation["responses"]
