"""`clouddigit compute image ...` and `compute vm create` against a live server: imports stream a real
qcow2 into a real S3 server (SeaweedFS); tasks run eagerly right after each commit."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from clouddigit.backends import volumes as volume_files
from clouddigit.cli import images as image_commands
from clouddigit.cli.client import CLIError
from clouddigit.compute import services as compute
from clouddigit.compute.models import VM
from iam.services import grant_role
from images import services
from images.models import Image, ImageQuota
from snapshots import services as snapshots
from tests.worker import created

pytestmark = pytest.mark.django_db

MiB = 2**20
HEADER = [
    "ID",
    "NAME",
    "SLOT",
    "PROJECT",
    "REGION",
    "STATE",
    "FORMAT",
    "SIZE",
    "VISIBILITY",
    "DEPRECATED",
    "TAGS",
]
IN_PROD = ("--project", "acme/prod", "--region", "bd-dha-1")
SHOW_DEPRECATED = 'tick "Show deprecated" or pass --show-deprecated.'
CHECKLIST = {"os-family": "ubuntu", "cis-level": "1", "owner": "alice", "created-at": "2026-05-11"}


def ok(result):
    assert result.code == 0, result.err
    return result


def import_args(path, name="golden", *extra: str) -> list[str]:
    return [
        "compute",
        "image",
        "import",
        "--file",
        str(path),
        "--format",
        "qcow2",
        "--name",
        name,
        *IN_PROD,
        *extra,
    ]


@pytest.fixture
def golden(prod, dha):
    """An available custom image of acme/prod, made without an upload."""
    return Image.objects.create(
        project=prod,
        region=dha,
        name="golden",
        created_by="alice",
        state=Image.State.AVAILABLE,
        tags=CHECKLIST,
    )


@pytest.fixture
def stock(dha):
    return Image.objects.create(
        slot=Image.Slot.STOCK,
        region=dha,
        name="ubuntu-24.04",
        source=Image.Source.PLATFORM,
        created_by="clouddigit",
        state=Image.State.AVAILABLE,
    )


# --- Import ------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_import_streams_the_file_and_waits_until_the_image_is_available(
    live_cli, bob, qcow2_file, image_stores, monkeypatch
):
    """Over real HTTP: the file goes up in chunks with its Content-Length."""
    source = qcow2_file()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)

    result = ok(live_cli(bob, *import_args(source, "golden", "--tag", "os-family=ubuntu", "-o", "json")))

    image = json.loads(result.out)
    assert image["state"] == "available" and image["upload_url"] is None
    assert image["detected_format"] == "qcow2" and image["virtual_size"] == 64 * MiB
    assert image["upload_bytes"] == source.stat().st_size  # the Content-Length the console checked
    assert image["guest_sha256"] == volume_files.checksum(source)
    assert image_stores["bd-dha-1"].head(Image.objects.get().object_key)["sha256"] == image["sha256"]
    assert image["tags"]["os-family"] == "ubuntu" and image["missing_tags"] == ["cis-level"]
    progress = result.err.split("\r")[-1]
    assert progress.startswith("uploading 100%") and progress.rstrip().endswith("MiB/s")


def test_upload_body_is_read_a_mebibyte_at_a_time_with_its_length():
    file = io.BytesIO(b"x" * (2 * MiB + 5))

    body = image_commands.FileChunks(file, 2 * MiB + 5, progress=None)

    assert len(body) == 2 * MiB + 5
    assert [len(chunk) for chunk in body] == [MiB, MiB, 5]


class AnswersInTurn:
    """A console that answers each GET of the image with the next of `answers`."""

    def __init__(self, *answers: dict):
        self.answers = list(answers)

    def get(self, path: str) -> dict:
        return self.answers.pop(0)


def test_waiting_polls_until_the_worker_is_done_and_reports_its_failure(monkeypatch):
    monkeypatch.setattr(image_commands, "POLL_SECONDS", 0)
    image = {"id": "i-1", "name": "golden", "state": "processing", "step": "convert", "hint": ""}
    stored = {**image, "state": "available", "step": ""}
    failed = {**image, "state": "failed", "step": "", "last_error": "qemu-img convert exited 1"}

    assert image_commands._wait_for_image(AnswersInTurn(image, stored), image) == stored
    with pytest.raises(CLIError) as error:
        image_commands._wait_for_image(AnswersInTurn(image, failed), image)

    assert (error.value.code, error.value.message) == (
        "ImageFailed",
        "image golden failed: qemu-img convert exited 1",
    )


def test_vmdk_declared_as_qcow2_prints_the_spec_error_and_exits_1(
    cli, bob, qcow2_file, tmp_path, image_stores
):
    vmdk = tmp_path / "disk.qcow2"  # named .qcow2 on purpose
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "vmdk", str(qcow2_file("source.qcow2")), str(vmdk)],
        check=True,
    )

    result = cli(bob, *import_args(vmdk))

    assert result.code == 1 and result.out == ""
    error, hint = result.err.splitlines()
    assert error == "ERROR: ImageUploadFailed: format 'qcow2' but file has VMDK signature"
    assert (
        hint.startswith("hint: Check the file's real format with `qemu-img info") and "--format vmdk" in hint
    )
    image = Image.objects.get(name="golden")
    assert image.state == Image.State.FAILED


def test_import_without_wait_returns_the_image_being_processed(cli, bob, qcow2_file, image_stores):
    result = ok(cli(bob, *import_args(qcow2_file(), "golden", "--no-wait", "-o", "id")))

    assert result.out.strip() == str(Image.objects.get(name="golden").id)


def test_import_as_in_the_issue_uses_your_only_project_and_the_default_region(
    cli, bob, qcow2_file, image_stores
):
    source = qcow2_file()
    args = (
        "compute",
        "image",
        "import",
        "--file",
        str(source),
        "--format",
        "qcow2",
        "--name",
        "N",
        "-o",
        "json",
    )

    image = json.loads(ok(cli(bob, *args)).out)

    assert (image["project"], image["region"], image["state"]) == ("acme/prod", "bd-dha-1", "available")


def test_import_asks_for_a_project_when_you_see_several(cli, alice, prod, sandbox, qcow2_file, image_stores):
    args = ("compute", "image", "import", "--file", str(qcow2_file()), "--format", "qcow2", "--name", "N")

    result = cli(alice, *args)

    assert result.code == 1
    assert result.err.startswith("ERROR: MissingProject: Name the project with --project")
    assert "acme/prod, acme/sandbox" in result.err


def test_a_missing_file_is_an_error_before_anything_is_created(cli, bob, tmp_path):
    result = cli(bob, *import_args(tmp_path / "nope.qcow2"))

    assert result.code == 1 and result.err.startswith("ERROR: CannotRead: ")
    assert not Image.objects.exists()


# --- The catalogue -----------------------------------------------------------------------------------


def test_list_shows_the_catalogue_and_filters_it(cli, alice, golden, stock, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)

    rows = [line.split() for line in ok(cli(alice, "compute", "image", "list")).out.splitlines()]

    assert rows[0] == HEADER
    assert rows[1][1:6] == ["golden", "custom", "acme/prod", "bd-dha-1", "available"]
    assert rows[2] == [str(stock.id), "ubuntu-24.04", "stock", "-", "bd-dha-1", "available", "-", "-"] + [
        "project",
        "false",
        "-",
    ]
    custom = ok(cli(alice, "compute", "image", "list", "--slot", "custom", "-o", "id")).out.split()
    assert custom == [str(golden.id)]
    Image.objects.filter(pk=stock.pk).update(detected_format="qcow2")
    qcow2 = ok(cli(alice, "compute", "image", "list", "--disk-format", "qcow2", "-o", "id")).out.split()
    assert qcow2 == [str(stock.id)]


def test_shared_lists_only_what_other_projects_share_with_yours(
    cli, django_user_model, alice, golden, stock, sandbox, dha
):
    own = Image.objects.create(
        project=sandbox, region=dha, name="sb-image", created_by="dora", state="available"
    )
    services.share_image(actor=alice, image=golden, project=sandbox)
    dora = django_user_model.objects.create_user("dora")
    grant_role(actor=None, role="image.viewer", account=sandbox.account, project=sandbox, username="dora")

    everything = ok(cli(dora, "compute", "image", "list", "-o", "id")).out.split()
    shared = ok(cli(dora, "compute", "image", "list", "--shared", "-o", "id")).out.split()

    assert sorted(everything) == sorted([str(golden.id), str(own.id), str(stock.id)])
    assert shared == [str(golden.id)]


def test_show_gives_checksums_checklist_shares_and_deprecation(cli, alice, golden, sandbox):
    golden.sha256 = "ab" * 32
    golden.tags = {"os-family": "ubuntu", "owner": "alice"}
    golden.save()
    ok(cli(alice, "compute", "image", "share", "golden", "--project", "acme/sandbox"))
    ok(cli(alice, "compute", "image", "deprecate", "golden", "--note", "Use golden-v2."))

    detail = ok(cli(alice, "compute", "image", "show", "golden")).out

    labels = dict(line.split(None, 1) for line in detail.splitlines())
    assert labels["ID"] == str(golden.id) and labels["PROJECT"] == "acme/prod"
    assert labels["SHA256"] == "ab" * 32
    assert labels["CHECKLIST"] == "missing tags: cis-level, created-at"
    assert labels["SHARED_WITH"] == "acme/sandbox"
    assert labels["DEPRECATED"].startswith("since 20") and labels["DEPRECATED"].endswith(": Use golden-v2.")


def test_a_name_in_two_regions_needs_the_id_or_a_region(cli, alice, golden, ctg):
    copy = Image.objects.create(
        project=golden.project, region=ctg, name="golden", created_by="alice", state="available"
    )

    result = cli(alice, "compute", "image", "show", "golden")

    assert result.code == 1 and result.err.startswith("ERROR: Ambiguous: 2 images are named 'golden' (")
    assert f"{copy.id} in acme/prod bd-ctg-1" in result.err
    shown = json.loads(
        ok(cli(alice, "compute", "image", "show", "golden", "--region", "bd-ctg-1", "-o", "json")).out
    )
    assert shown["id"] == str(copy.id)
    assert (
        cli(alice, "compute", "image", "show", "nope").err
        == "ERROR: NotFound: no image named 'nope' that you can see\n"
    )


def test_an_outsider_cannot_see_or_change_the_image(cli, charlie, golden):
    assert cli(charlie, "compute", "image", "show", str(golden.id)).code == 1
    result = cli(charlie, "compute", "image", "delete", str(golden.id))
    assert result.code == 1 and Image.objects.filter(pk=golden.pk).exists()


# --- Changes -----------------------------------------------------------------------------------------


def test_tag_replaces_the_tags_and_keeps_created_at(cli, alice, golden):
    result = ok(
        cli(alice, "compute", "image", "tag", "golden", "--tag", "os-family=rocky", "--tag", "owner=ops")
    )

    assert result.out.split()[-1] == "created-at=2026-05-11,os-family=rocky,owner=ops"
    golden.refresh_from_db()
    assert golden.tags == {"os-family": "rocky", "owner": "ops", "created-at": "2026-05-11"}


def test_visibility_account_offers_the_image_to_every_project(cli, alice, golden, sandbox):
    assert (
        ok(cli(alice, "compute", "image", "picker", "--project", "acme/sandbox", "--region", "bd-dha-1")).out
        == ""
    )

    ok(cli(alice, "compute", "image", "visibility", "golden", "account"))

    picker = ok(
        cli(
            alice,
            "compute",
            "image",
            "picker",
            "--project",
            "acme/sandbox",
            "--region",
            "bd-dha-1",
            "-o",
            "id",
        )
    )
    assert picker.out.split() == [str(golden.id)]
    ok(cli(alice, "compute", "image", "visibility", "golden", "project"))
    golden.refresh_from_db()
    assert golden.visibility == "project"


def test_share_and_unshare(cli, alice, golden, sandbox):
    shared = json.loads(
        ok(cli(alice, "compute", "image", "share", "golden", "--project", "acme/sandbox", "-o", "json")).out
    )
    assert shared["shared_with"] == ["acme/sandbox"]

    unshared = ok(
        cli(alice, "compute", "image", "unshare", str(golden.id), "--project", "acme/sandbox", "-o", "json")
    )

    assert json.loads(unshared.out)["shared_with"] == []


def test_sharing_with_another_account_is_refused(cli, alice, golden, globex_main):
    result = cli(alice, "compute", "image", "share", "golden", "--project", "globex/main")

    assert result.code == 1 and result.err.startswith("ERROR: NotYetSupported: ")


def test_picker_hides_deprecated_images_unless_asked_for(cli, alice, golden, stock):
    picker = ["compute", "image", "picker", *IN_PROD, "-o", "id"]
    assert ok(cli(alice, *picker)).out.split() == [str(golden.id), str(stock.id)]

    ok(cli(alice, "compute", "image", "deprecate", "golden", "--note", "Use golden-v2."))

    assert ok(cli(alice, *picker)).out.split() == [str(stock.id)]
    assert ok(cli(alice, *picker, "--show-deprecated")).out.split() == [str(golden.id), str(stock.id)]
    ok(cli(alice, "compute", "image", "undeprecate", "golden"))
    assert ok(cli(alice, *picker)).out.split() == [str(golden.id), str(stock.id)]


def test_deprecation_at_a_future_time_keeps_the_image_offered(cli, alice, golden):
    result = ok(
        cli(alice, "compute", "image", "deprecate", "golden", "--at", "2099-01-01T00:00:00Z", "-o", "json")
    )

    assert json.loads(result.out)["deprecated"] is False
    labels = dict(
        line.split(None, 1) for line in ok(cli(alice, "compute", "image", "show", "golden")).out.splitlines()
    )
    assert labels["DEPRECATED"] == "from 2099-01-01T00:00:00Z on (scheduled)"


def test_why_missing_prints_each_reason_and_its_fix(cli, alice, golden, sandbox):
    ok(cli(alice, "compute", "image", "deprecate", "golden", "--note", "Use golden-v2."))

    own = ok(cli(alice, "compute", "image", "why-missing", "golden", *IN_PROD)).out.splitlines()
    other = ok(
        cli(
            alice,
            "compute",
            "image",
            "why-missing",
            "golden",
            "--project",
            "acme/sandbox",
            "--region",
            "bd-dha-1",
        )
    )
    missing = ok(cli(alice, "compute", "image", "why-missing", "nope", *IN_PROD)).out.splitlines()

    assert own[0] == f"image golden ({golden.id}) of acme/prod in bd-dha-1"
    assert own[1].startswith("reason: The image is deprecated (since ") and own[1].endswith("Use golden-v2.")
    assert own[2] == "fix:    Deprecated images are hidden in the picker; " + SHOW_DEPRECATED
    assert "reason: The image is in project acme/prod and is not shared with acme/sandbox." in other.out
    assert "fix:    An image.admin of acme/prod shares it with acme/sandbox" in other.out
    assert missing[0] == "reason: No image named 'nope' exists in acme or the Cloud Digit catalogue."
    assert missing[1].startswith("fix:    Check the spelling")


def test_delete(cli, alice, golden):
    result = ok(cli(alice, "compute", "image", "delete", "golden"))

    assert result.out == "Deleted image golden\n"
    assert not Image.objects.filter(pk=golden.pk).exists()


def test_limit_needs_a_ticket(cli, alice, bob, prod):
    limit = ["compute", "image", "limit", "--project", "acme/prod", "--limit", "60"]
    assert cli(bob, *limit, "--ticket", "OPS-1").err.startswith("ERROR: PermissionDenied: ")
    assert cli(alice, *limit, "--ticket", " ").err.startswith("ERROR: InvalidRequest: A ticket reference")

    row = ok(cli(alice, *limit, "--ticket", "OPS-1")).out.split()

    assert row[1:5] == ["acme/prod", "60", "OPS-1", "alice"]
    assert ImageQuota.objects.get().limit == 60


# --- From snapshots, to other regions, into VMs -------------------------------------------------------


def test_promote_a_multi_volume_snapshot_needs_a_device(
    cli, alice, prod, dha, make_vm, image_stores, committed
):
    vm = make_vm(prod, "db-01")
    with committed():
        data = created(
            compute.create_volume(actor=None, project=prod, region=dha, name="db-data", size_bytes=16 * MiB)
        )
        compute.attach_volume(actor=None, volume=data, vm=vm, device="vdb")
        snapshots.create_snapshot(actor=None, vm=vm, name="db-snap")
    promote = ["compute", "image", "promote", "--snapshot", "db-snap", "--name", "db-image"]

    refused = cli(alice, *promote)

    assert refused.code == 1
    assert refused.err.startswith("ERROR: ImagePromoteFailed: snapshot has multiple volumes attached")
    image = json.loads(
        ok(cli(alice, *promote, "--device", "vda", "--tag", "os-family=debian", "-o", "json")).out
    )
    assert image["source"] == "snapshot" and image["tags"]["os-family"] == "debian"
    assert Image.objects.get(pk=image["id"]).state == Image.State.AVAILABLE


def test_import_copy_to_another_region_and_create_a_vm_from_it(cli, alice, prod, qcow2_file, image_stores):
    source = qcow2_file()
    ok(cli(alice, *import_args(source)))

    copied = ok(
        cli(
            alice, "compute", "image", "copy", "golden", "--target-region", "bd-ctg-1", "--name", "golden-ctg"
        )
    )
    vm_row = ok(
        cli(
            alice,
            "compute",
            "vm",
            "create",
            "--name",
            "web-01",
            "--image",
            "golden",
            "--flavor",
            "std-2x4",
            "--vpc",
            "prod-vpc",
            *IN_PROD,
            "--boot-size-gib",
            "2",
            "--tag",
            "env=prod",
            "--no-start",
        )
    ).out.split()

    assert copied.out.split()[1:5] == ["golden-ctg", "custom", "acme/prod", "bd-ctg-1"]
    vm = VM.objects.get(name="web-01")
    assert vm_row[:3] == [str(vm.id), "web-01", "acme/prod"] and vm_row[-1] == "env=prod,image=golden"
    boot = vm.volumes.get()
    assert boot.size_bytes == 2 * 2**30
    assert volume_files.read_bytes(boot.path, 0, MiB) == b"\xab" * MiB


def test_vm_create_from_an_image_it_may_not_use_says_why(cli, alice, golden, sandbox):
    result = cli(
        alice,
        "compute",
        "vm",
        "create",
        "--name",
        "x",
        "--image",
        "golden",
        "--flavor",
        "std-2x4",
        "--vpc",
        "v",
        "--project",
        "acme/sandbox",
        "--region",
        "bd-dha-1",
    )

    assert result.code == 1
    assert result.err.startswith("ERROR: InvalidRequest: The image is in project acme/prod and is not shared")


def test_storage_quota_shows_usage_and_is_raised_with_a_ticket(cli, capsys, alice, bob, prod, dha, golden):
    Image.objects.filter(pk=golden.pk).update(stored_bytes=3 * 2**30)
    quota = ["compute", "quota", "storage", "--project", "acme/prod"]

    shown = ok(cli(bob, *quota)).out.split()

    assert shown == ["acme/prod", "3GiB", "1TiB", "0B", "3GiB", "-"]
    raise_it = [*quota, "--limit-gib", "2048"]
    with pytest.raises(SystemExit) as exited:
        cli(alice, *raise_it)
    assert exited.value.code == 2 and "--limit-gib needs --ticket" in capsys.readouterr().err
    assert cli(bob, *raise_it, "--ticket", "OPS-9").err.startswith("ERROR: PermissionDenied: ")

    raised = ok(cli(alice, *raise_it, "--ticket", "OPS-9", "-o", "json")).out

    assert json.loads(raised)["limit_bytes"] == 2 * 2**40
    assert ok(cli(bob, *quota)).out.split()[2:] == ["2TiB", "0B", "3GiB", "OPS-9"]
