"""Bad input to every image operation, through the API: a 4xx naming the field, nothing written, and a
refusal in the audit log."""

from __future__ import annotations

import subprocess

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from clouddigit.audit.models import AuditEntry
from clouddigit.compute.models import VM, Volume
from images.models import Image, ImageQuota, ImageShare


@pytest.fixture
def api(alice):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    return client


def _image_url(golden, action=""):
    return (
        f"/api/v1/compute/images/{golden.pk}/{action}/" if action else f"/api/v1/compute/images/{golden.pk}/"
    )


IMPORT = {"project": "acme/prod", "region": "bd-dha-1", "name": "new-image", "format": "qcow2"}

CASES = [
    (
        "import: unknown format",
        "/api/v1/compute/images/",
        {**IMPORT, "format": "vdi"},
        "format",
        "ImageUploadFailed",
    ),
    (
        "import: bad name",
        "/api/v1/compute/images/",
        {**IMPORT, "name": "no spaces!"},
        "name",
        "InvalidRequest",
    ),
    (
        "import: bad tag key",
        "/api/v1/compute/images/",
        {**IMPORT, "tags": {"Bad Key": "x"}},
        "tags",
        "InvalidRequest",
    ),
    (
        "import: unknown region",
        "/api/v1/compute/images/",
        {**IMPORT, "region": "mars-1"},
        "region",
        "InvalidRequest",
    ),
    (
        "import: too large",
        "/api/v1/compute/images/",
        {**IMPORT, "size_bytes": 2**50},
        "file",
        "ImageUploadFailed",
    ),
    ("copy: unknown region", "copy", {"region": "mars-1"}, "region", "InvalidRequest"),
    ("copy: nowhere new", "copy", {"region": "bd-dha-1"}, "region", "InvalidRequest"),
    ("share: other account", "share", {"project": "globex/main"}, "project", "NotYetSupported"),
    ("share: no such project", "share", {"project": "acme/nope"}, "project", "InvalidRequest"),
    ("visibility: unknown", "visibility", {"visibility": "public"}, "visibility", "InvalidRequest"),
    ("deprecate: bad time", "deprecate", {"at": "next tuesday"}, "at", "InvalidRequest"),
    ("tags: bad key", "tags", {"tags": {"Bad Key": "x"}}, "tags", "InvalidRequest"),
    (
        "limit: no ticket",
        "/api/v1/compute/image-limits/",
        {"project": "acme/prod", "limit": 60, "ticket": ""},
        "ticket",
        "InvalidRequest",
    ),
    (
        "vm create: unknown flavor",
        "/api/v1/compute/vms/",
        {"project": "acme/prod", "name": "web-9", "image": "golden", "flavor": "huge", "vpc": "v"},
        "flavor",
        "InvalidRequest",
    ),
    (
        "vm create: unknown image",
        "/api/v1/compute/vms/",
        {"project": "acme/prod", "name": "web-9", "image": "nope", "flavor": "std-2x4", "vpc": "v"},
        "image",
        "InvalidRequest",
    ),
]


def _state():
    return (
        list(Image.objects.order_by("pk").values_list("pk", "name", "visibility", "deprecated_at", "tags")),
        ImageShare.objects.count(),
        ImageQuota.objects.count(),
        VM.objects.count(),
        Volume.objects.count(),
    )


@pytest.mark.parametrize(("case", "url", "body", "field", "code"), CASES, ids=[case[0] for case in CASES])
def test_bad_input_names_the_field_writes_nothing_and_is_audited(
    api, golden, globex_main, dha, ctg, case, url, body, field, code
):
    url = url if url.startswith("/") else _image_url(golden, url)
    before, refusals = _state(), AuditEntry.objects.filter(actor_name="alice", outcome="refused").count()

    response = api.post(url, body, format="json")

    assert response.status_code in (400, 409), response.content
    assert (response.json()["code"], response.json().get("field")) == (code, field), response.json()
    assert _state() == before
    assert AuditEntry.objects.filter(actor_name="alice", outcome="refused").count() == refusals + 1


def test_a_refused_upload_keeps_only_the_failed_row_with_its_reason(api, prod, tmp_path, dha, image_stores):
    created = api.post("/api/v1/compute/images/", IMPORT, format="json").json()
    vmdk = tmp_path / "disk.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "16M"], check=True)

    response = api.put(
        f"/api/v1/compute/images/{created['id']}/file/",
        vmdk.read_bytes(),
        content_type="application/octet-stream",
    )

    assert response.status_code == 400
    assert response.json() == {
        "code": "ImageUploadFailed",
        "message": "format 'qcow2' but file has VMDK signature",
        "field": "file",
    }
    image = Image.objects.get(pk=created["id"])
    assert image.state == Image.State.FAILED and not image.upload_path.exists()
    assert image_stores["bd-dha-1"].list("images/") == []
    entry = AuditEntry.objects.get(action="image.import.upload")
    assert (entry.outcome, entry.message) == ("refused", str(image.last_error))
