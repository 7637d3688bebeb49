"""Console pages for images: the catalogue, an image's page, the upload, promotion, VM create."""

from __future__ import annotations

import html
import subprocess
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from clouddigit.audit.models import AuditEntry
from clouddigit.compute import services as compute
from images import services
from images.models import Image, ImageShare
from snapshots import services as snapshot_services
from tests.worker import created

MiB = 2**20
VMDK_REFUSAL = "format 'qcow2' but file has VMDK signature"


def _image(project, region, name, **fields) -> Image:
    """A row as the pipeline leaves it; pages only read rows, the lead's tests drive the pipeline."""
    defaults = {
        "slot": Image.Slot.CUSTOM if project else Image.Slot.STOCK,
        "state": Image.State.AVAILABLE,
        "declared_format": "qcow2",
        "detected_format": "qcow2",
        "virtual_size": 2 * 2**30,
        "created_by": "system",
        "tags": {"os-family": "ubuntu", "cis-level": "1", "owner": "ops", "created-at": "2026-05-01"},
    }
    return Image.objects.create(project=project, region=region, name=name, **{**defaults, **fields})


@pytest.fixture
def catalogue(prod, dha):
    return {
        "stock": _image(None, dha, "ubuntu-24.04", tags={"os-family": "ubuntu"}),
        "hardened": _image(None, dha, "rocky-9-cis", slot=Image.Slot.HARDENED, openscap_score=92.5),
        "custom": _image(prod, dha, "golden-web", tags={"os-family": "debian"}),
    }


def _vmdk(tmp_path):
    path = tmp_path / "disk.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(path), "16M"], check=True)
    return path


def _text(response) -> str:
    """The page as the user reads it (entities decoded)."""
    return html.unescape(response.content.decode())


def _section(page: str, slot: str) -> str:
    return page.split(f'id="{slot}"')[1].split("</section>")[0]


# --- Catalogue --------------------------------------------------------------------------------------


def test_catalogue_shows_the_three_slots_and_missing_checklist_tags(client, alice, catalogue):
    client.force_login(alice)
    page = client.get(reverse("images:catalogue")).content.decode()
    stock, hardened, custom = (_section(page, slot) for slot in ("stock", "hardened", "custom"))
    assert "ubuntu-24.04" in stock and "rocky-9-cis" not in stock
    assert "rocky-9-cis" in hardened and "CIS L1" in hardened and "92.5" in hardened
    assert "golden-web" in custom and "acme/prod" in custom and "2.0\xa0GB" in custom
    # golden-web was tagged os-family only: the checklist's other tags are flagged on its row.
    row = custom.split("golden-web")[1].split("</tr>")[0]
    flagged = row.split('title="The hardening checklist asks for this tag">')[1:]
    assert [tag.split("</span>")[0] for tag in flagged] == ["cis-level", "owner", "created-at"]
    assert "<strong>1 of 50</strong> custom images used in acme/prod" in page


def test_catalogue_follows_the_region_switcher_and_the_filters(client, alice, catalogue, prod, ctg):
    _image(prod, ctg, "golden-web-ctg")
    client.force_login(alice)
    client.post(reverse("switch-scope"), {"project": str(prod.pk), "region": "bd-ctg-1"})
    page = client.get(reverse("images:catalogue")).content.decode()
    assert "golden-web-ctg" in page and ">golden-web<" not in page and "ubuntu-24.04" not in page

    client.post(reverse("switch-scope"), {"project": str(prod.pk), "region": ""})
    fragment = client.get(reverse("images:catalogue"), {"name": "ctg"}, HTTP_HX_REQUEST="true")
    body = fragment.content.decode()
    assert body.lstrip().startswith('<div id="table">') and "golden-web-ctg" in body and "ubuntu" not in body


def test_catalogue_query_count_does_not_grow_with_the_images(
    client, alice, catalogue, prod, dha, django_assert_max_num_queries
):
    client.force_login(alice)
    client.get(reverse("images:catalogue"))  # the session and the scope settle
    with django_assert_max_num_queries(20) as few:
        client.get(reverse("images:catalogue"))
    for n in range(30):
        _image(prod, dha, f"app-{n}", tags={})
        _image(None, dha, f"stock-{n}")
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = client.get(reverse("images:catalogue")).content.decode()
    assert "app-29" in page and "stock-29" in page


def test_shared_with_me_lists_images_other_projects_shared(client, bob, catalogue, prod, sandbox, dha):
    theirs = _image(sandbox, dha, "sandbox-base")
    _image(sandbox, dha, "sandbox-private")
    ImageShare.objects.create(image=theirs, project=prod, shared_by="alice")
    client.force_login(bob)
    own = client.get(reverse("images:catalogue")).content.decode()
    assert "golden-web" in own and "sandbox-base" not in own
    shared = client.get(reverse("images:catalogue"), {"shared": "1"}).content.decode()
    assert "sandbox-base" in shared and "acme/sandbox" in shared
    assert "sandbox-private" not in shared and "golden-web" not in shared and "ubuntu-24.04" not in shared


def test_an_account_admin_raises_the_image_limit_with_a_ticket(client, alice, bob, catalogue, prod):
    client.force_login(bob)
    assert "Raise limit" not in client.get(reverse("images:catalogue")).content.decode()

    client.force_login(alice)
    url = reverse("images:raise-limit")
    missing = client.post(url, {"project": str(prod.pk), "limit": "75", "ticket": "  "})
    assert missing.status_code == 400
    assert "Ticket reference" in _text(missing).split("This field is required.")[0].rsplit("<label>", 1)[1]
    assert services.image_limit(prod) == 50
    done = client.post(url, {"project": str(prod.pk), "limit": "75", "ticket": "OPS-7"}, follow=True)
    assert "<strong>1 of 75</strong> custom images used" in done.content.decode()
    assert AuditEntry.objects.filter(action="image.quota.raise", outcome="success").exists()


# --- One image --------------------------------------------------------------------------------------


def test_image_page_shows_checksums_tags_and_shares(client, alice, catalogue, sandbox):
    image = catalogue["custom"]
    Image.objects.filter(pk=image.pk).update(sha256="a" * 64, guest_sha256="b" * 64)
    ImageShare.objects.create(image=image, project=sandbox, shared_by="alice")
    client.force_login(alice)
    page = client.get(reverse("images:detail", args=[image.pk])).content.decode()
    assert "a" * 64 in page and "b" * 64 in page
    assert "Missing checklist tags" in page and '<span class="tag tag-missing">owner</span>' in page
    assert "acme/sandbox" in page and "Unshare" in page


def test_image_page_is_a_404_for_an_outsider(client, charlie, catalogue):
    client.force_login(charlie)
    assert client.get(reverse("images:detail", args=[catalogue["custom"].pk])).status_code == 404
    assert client.get(reverse("images:detail", args=[catalogue["stock"].pk])).status_code == 200


def test_a_processing_image_polls_until_it_settles(client, alice, prod, dha):
    image = _image(prod, dha, "baking", state=Image.State.PROCESSING, step="convert vmdk to qcow2")
    client.force_login(alice)
    url = reverse("images:detail", args=[image.pk])
    page = client.get(url).content.decode()
    assert 'hx-trigger="every 3s"' in page and "convert vmdk to qcow2" in page
    fragment = client.get(url, HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200 and fragment.content.decode().lstrip().startswith(
        '<section id="status"'
    )
    Image.objects.filter(pk=image.pk).update(state=Image.State.AVAILABLE, step="", sha256="c" * 64)
    settled = client.get(url, HTTP_HX_REQUEST="true")
    assert settled.status_code == 286 and "c" * 64 in settled.content.decode()
    assert 'hx-trigger="every 3s"' not in settled.content.decode()


def test_tags_sharing_and_deprecation_from_the_image_page(client, alice, catalogue, sandbox, globex_main):
    image = catalogue["custom"]
    client.force_login(alice)
    url = reverse("images:detail", args=[image.pk])

    client.post(reverse("images:tags", args=[image.pk]), {"tags": "os-family=debian\ncis-level=2\nowner=web"})
    page = client.get(url).content.decode()
    assert "All checklist tags are set" in page and "created-at=" in page
    bad = client.post(reverse("images:tags", args=[image.pk]), {"tags": "not a tag"})
    assert bad.status_code == 400 and "must look like key=value" in bad.content.decode()

    client.post(reverse("images:share", args=[image.pk]), {"project": "acme/sandbox"})
    assert ImageShare.objects.filter(image=image, project=sandbox).exists()
    other = client.post(reverse("images:share", args=[image.pk]), {"project": "globex/main"})
    assert other.status_code == 400
    assert "Sharing with another account (globex) is not yet supported" in (other.content.decode())
    client.post(reverse("images:unshare", args=[image.pk]), {"project": "acme/sandbox"})
    assert not ImageShare.objects.filter(image=image).exists()

    client.post(reverse("images:visibility", args=[image.pk]), {"visibility": "account"})
    assert Image.objects.get(pk=image.pk).visibility == "account"

    client.post(reverse("images:deprecate", args=[image.pk]), {"at": "", "note": "use golden-web-2"})
    page = client.get(url).content.decode()
    assert "deprecated" in page and "use golden-web-2" in page and "Un-deprecate" in page
    undone = client.post(reverse("images:undeprecate", args=[image.pk]), HTTP_HX_REQUEST="true")
    assert undone.status_code == 204 and undone["HX-Location"] == url
    assert Image.objects.get(pk=image.pk).deprecated_at is None

    client.post(reverse("images:deprecate", args=[image.pk]), {"at": "2099-01-31T09:30", "note": ""})
    assert Image.objects.get(pk=image.pk).deprecated_at.isoformat() == "2099-01-31T09:30:00+00:00"
    assert "Deprecated from 2099-01-31 09:30 UTC." in client.get(url).content.decode()


def test_a_viewer_is_told_what_uploading_needs(client, django_user_model, prod):
    from iam.services import grant_role

    django_user_model.objects.create_user("vic")
    grant_role(actor=None, role="image.viewer", account=prod.account, project=prod, username="vic")
    client.force_login(django_user_model.objects.get(username="vic"))
    page = client.get(reverse("images:upload")).content.decode()
    assert "needs the image.publisher role in acme/prod" in page and "data-image-upload" not in page


def test_a_publisher_may_not_share(client, bob, catalogue, sandbox):
    image = catalogue["custom"]
    client.force_login(bob)
    page = client.get(reverse("images:detail", args=[image.pk])).content.decode()
    assert "Save tags" in page and "Share with a project" not in page and "need the image.admin role" in page
    refused = client.post(reverse("images:share", args=[image.pk]), {"project": "acme/sandbox"})
    assert refused.status_code == 403
    assert "You may not share image golden-web in acme/prod" in _text(refused)


def test_delete_goes_back_to_the_catalogue(client, alice, catalogue, image_stores):
    client.force_login(alice)
    response = client.post(reverse("images:delete", args=[catalogue["custom"].pk]), {"confirmed": "yes"})
    assert response["Location"] == reverse("images:catalogue")
    assert not Image.objects.filter(pk=catalogue["custom"].pk).exists()


# --- Upload -----------------------------------------------------------------------------------------


def _start(client, project, **fields):
    data = {"project": str(project.pk), "region": "bd-dha-1", "name": "web-base", "format": "qcow2"}
    return client.post(reverse("images:upload"), {**data, **fields}, HTTP_ACCEPT="application/json")


def test_upload_page_starts_an_import_and_the_file_view_refuses_a_vmdk_declared_qcow2(
    client, alice, prod, dha, tmp_path
):
    client.force_login(alice)
    page = client.get(reverse("images:upload")).content.decode()
    assert "data-image-upload" in page and "js/image-upload.js" in page and 'value="vhdx"' in page

    vmdk = _vmdk(tmp_path).read_bytes()
    started = _start(client, prod, size_bytes=str(len(vmdk)), os_family="debian", cis_level="1")
    assert started.status_code == 201
    image = Image.objects.get(name="web-base")
    assert started.json()["upload_url"] == reverse("images:file", args=[image.pk])
    assert (
        image.state == "uploading" and image.tags["os-family"] == "debian" and image.tags["owner"] == "alice"
    )

    refused = client.put(started.json()["upload_url"], vmdk, content_type="application/octet-stream")
    assert refused.status_code == 400
    body = refused.json()
    assert (body["code"], body["message"]) == (
        "ImageUploadFailed",
        "format 'qcow2' but file has VMDK signature",
    )
    assert "qemu-img info" in body["hint"] and "--format vmdk" in body["hint"]
    image.refresh_from_db()
    assert image.state == "failed" and not image.upload_path.exists()
    assert VMDK_REFUSAL in _text(client.get(reverse("images:detail", args=[image.pk])))


def test_start_errors_come_back_as_json_for_the_script(client, alice, prod, dha):
    client.force_login(alice)
    _image(prod, dha, "web-base")
    taken = _start(client, prod, size_bytes="1024")
    assert (
        taken.status_code == 409
        and taken.json()["code"] == "Conflict"
        and "already exists" in taken.json()["message"]
    )
    too_big = _start(client, prod, name="huge", size_bytes=str(100 * 2**30))
    assert too_big.status_code == 400 and "uploads are limited to 64 GiB" in too_big.json()["message"]


def test_without_javascript_the_form_posts_the_file_and_shows_the_refusal_under_it(
    client, alice, prod, dha, tmp_path
):
    client.force_login(alice)
    with _vmdk(tmp_path).open("rb") as file:
        data = {
            "project": str(prod.pk),
            "region": "bd-dha-1",
            "name": "web-base",
            "format": "qcow2",
            "file": file,
        }
        response = client.post(reverse("images:upload"), data)
    assert response.status_code == 400
    page = _text(response)
    assert page.index(VMDK_REFUSAL) > page.index('name="file"')  # under the form, where the user acted
    assert "--format vmdk" in page.split(VMDK_REFUSAL)[1]
    assert Image.objects.get(name="web-base").state == "failed"
    assert AuditEntry.objects.filter(action="image.import.upload", outcome="refused").exists()


def test_without_javascript_an_upload_is_stored(
    client, alice, prod, dha, image_stores, qcow2_file, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    with qcow2_file().open("rb") as file, django_capture_on_commit_callbacks(execute=True):
        data = {
            "project": str(prod.pk),
            "region": "bd-dha-1",
            "name": "web-base",
            "format": "qcow2",
            "file": file,
        }
        response = client.post(reverse("images:upload"), data)
    image = Image.objects.get(name="web-base")
    assert response["Location"] == reverse("images:detail", args=[image.pk])
    assert image.state == "available" and len(image.sha256) == 64
    assert image_stores["bd-dha-1"].head(image.object_key)["sha256"] == image.sha256


def test_the_file_view_checks_csrf_from_the_header(alice, prod, dha):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    image = services.start_import(
        actor=alice, project=prod, region=dha, name="web-base", declared_format="raw"
    )
    url = reverse("images:file", args=[image.pk])
    assert client.put(url, b"\0" * 512, content_type="application/octet-stream").status_code == 403
    assert client.get(url).status_code == 405
    image.refresh_from_db()
    assert image.state == "uploading" and image.upload_bytes == 0


def test_an_outsider_cannot_upload_into_an_image(client, charlie, alice, prod, dha):
    image = services.start_import(
        actor=alice, project=prod, region=dha, name="web-base", declared_format="raw"
    )
    client.force_login(charlie)
    url = reverse("images:file", args=[image.pk])
    assert client.put(url, b"\0" * 512, content_type="application/octet-stream").status_code == 404
    forged = client.post(
        reverse("images:upload"),
        {"project": str(prod.pk), "region": "bd-dha-1", "name": "x", "format": "raw", "size_bytes": "1"},
    )
    assert forged.status_code == 404


# --- Promote ----------------------------------------------------------------------------------------


@pytest.fixture
def vm_snapshot(run, make_vm, prod, dha):
    vm = make_vm(prod, "db-01", tags={"env": "prod"})
    data = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="db-01-data", size_bytes=8 * MiB)
    )
    compute.attach_volume(actor=None, volume=data, vm=vm, device="vdb")
    return run(snapshot_services.create_snapshot, actor=None, vm=vm, name="db-01-nightly")


def test_promoting_a_multi_disk_vm_snapshot_without_a_disk_is_refused_where_the_user_acted(
    client, alice, vm_snapshot
):
    client.force_login(alice)
    url = reverse("snapshots:detail", args=[vm_snapshot.pk])
    page = client.get(url).content.decode()
    assert "Promote to image" in page and "Only one disk can be promoted" in page
    assert '<option value="vda" selected>' in page

    response = client.post(
        reverse("images:promote", args=[vm_snapshot.pk]), {"name": "db-base", "device": ""}
    )
    assert response.status_code == 409
    page = response.content.decode()
    assert "snapshot has multiple volumes attached (vda, vdb)" in page
    assert page.index("snapshot has multiple volumes attached") > page.index('id="promote"')
    assert f'href="{reverse("snapshots:list")}" aria-current="page">Snapshots</a>' in page
    assert not Image.objects.filter(name="db-base").exists()

    promoted = client.post(
        reverse("images:promote", args=[vm_snapshot.pk]), {"name": "db-base", "device": "vda"}
    )
    image = Image.objects.get(name="db-base")
    assert promoted["Location"] == reverse("images:detail", args=[image.pk])
    assert image.source_snapshot_id == vm_snapshot.pk and image.state == "processing"


# --- Create a VM from an image ----------------------------------------------------------------------


def test_picker_fragment_hides_deprecated_images_unless_asked(client, alice, catalogue, prod, dha):
    _image(prod, dha, "golden-old", deprecated_at=timezone.now() - timedelta(days=1))
    client.force_login(alice)
    url = reverse("images:launch")
    page = client.get(url, {"region": "bd-dha-1"}).content.decode()
    assert "golden-web" in page and "rocky-9-cis" in page and "golden-old" not in page
    assert "Why is my image missing?" in page

    hidden = client.get(url, {"region": "bd-dha-1"}, HTTP_HX_REQUEST="true").content.decode()
    assert hidden.lstrip().startswith('<div id="picker"') and "golden-old" not in hidden
    shown = client.get(url, {"region": "bd-dha-1", "show_deprecated": "on"}, HTTP_HX_REQUEST="true")
    assert "golden-old · acme/prod · CIS L1 (deprecated)" in shown.content.decode()


def test_why_missing_fragment_gives_each_reason_and_its_fix(client, alice, prod, sandbox, dha, ctg):
    _image(prod, ctg, "golden-web")
    _image(sandbox, dha, "golden-web")
    client.force_login(alice)
    url = reverse("images:why-missing")
    fragment = client.get(
        url, {"why": "golden-web", "region": "bd-dha-1", "project": str(prod.pk)}, HTTP_HX_REQUEST="true"
    )
    body = fragment.content.decode()
    assert body.lstrip().startswith('<div id="why"')
    assert "The image is in region bd-ctg-1, not bd-dha-1." in body and "Copy it to bd-dha-1" in body
    assert "The image is in project acme/sandbox and is not shared with acme/prod." in body
    nothing = client.get(url, {"why": "nope", "region": "bd-dha-1", "project": str(prod.pk)}).content.decode()
    assert (
        "No image named &#x27;nope&#x27; exists in acme" in nothing
        and "<h1>Create a VM from an image" in nothing
    )


def test_creating_a_vm_from_an_image_elsewhere_says_why_at_the_picker(client, alice, prod, ctg):
    _image(prod, ctg, "golden-web")
    client.force_login(alice)
    response = client.post(
        reverse("images:launch"),
        {
            "project": str(prod.pk),
            "region": "bd-dha-1",
            "name": "web-01",
            "flavor": "std-2x4",
            "vpc": "prod-vpc",
            "image": "golden-web",
            "start": "on",
        },
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "The image is in region bd-ctg-1, not bd-dha-1." in page
    assert not prod.vms.filter(name="web-01").exists()


def test_creating_a_vm_from_an_uploaded_image(
    client, alice, prod, dha, image_stores, qcow2_file, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    with qcow2_file().open("rb") as file, django_capture_on_commit_callbacks(execute=True):
        data = {
            "project": str(prod.pk),
            "region": "bd-dha-1",
            "name": "web-base",
            "format": "qcow2",
            "file": file,
        }
        client.post(reverse("images:upload"), data)
    image = Image.objects.get(name="web-base", state="available")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("images:launch"),
            {
                "project": str(prod.pk),
                "region": "bd-dha-1",
                "name": "web-01",
                "flavor": "std-2x4",
                "vpc": "prod-vpc",
                "image": str(image.pk),
                "boot_gib": "1",
            },
        )
    vm = prod.vms.get(name="web-01")
    assert response["Location"] == reverse("compute:vm-detail", args=[vm.pk])
    assert vm.tags["image"] == "web-base"
