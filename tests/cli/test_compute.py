from __future__ import annotations

import json
import re
import sys

import pytest

from clouddigit.compute.models import VM
from tests.worker import created

pytestmark = pytest.mark.django_db

VM_HEADER = ["ID", "NAME", "PROJECT", "REGION", "STATE", "FLAVOR", "VPC", "TAGS"]


def token_starts(line: str) -> list[int]:
    return [match.start() for match in re.finditer(r"\S+", line)]


def test_vm_table_has_one_token_per_column_so_awk_picks_columns(
    cli, alice, make_vm, prod, sandbox, ctg, monkeypatch
):
    db01 = make_vm(prod, "db-01", tags={"role": "db", "env": "prod"})
    make_vm(sandbox, "sb-01", region=ctg, flavor="bm-c1")
    assert len(cli(alice, "compute", "vm", "list").out.splitlines()) == 2  # piped: no header line
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)

    result = cli(alice, "compute", "vm", "list")

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    rows = [line.split() for line in lines]
    assert rows[0] == VM_HEADER
    assert rows[1] == [str(db01.id), "db-01", "acme/prod", "bd-dha-1", "stopped", "std-2x4", "test-vpc"] + [
        "env=prod,role=db"
    ]
    assert rows[2][1:] == ["sb-01", "acme/sandbox", "bd-ctg-1", "stopped", "bm-c1", "test-vpc", "-"]
    assert [row[2] for row in rows] == ["PROJECT", "acme/prod", "acme/sandbox"]
    assert token_starts(lines[1]) == token_starts(lines[0]) == token_starts(lines[2])


def test_vm_list_filters_go_to_the_api(cli, alice, make_vm, prod, sandbox):
    make_vm(prod, "db-01", tags={"env": "prod"})
    make_vm(prod, "web-01", tags={"env": "stage"})
    make_vm(sandbox, "db-02", tags={"env": "prod"})

    result = cli(alice, "compute", "vm", "list", "--project", "acme/prod", "--tag", "env=prod", "-o", "json")

    assert [vm["name"] for vm in json.loads(result.out)] == ["db-01"]


def test_id_output_is_bare_ids_of_every_page(cli, alice, make_vm, prod):
    first = make_vm(prod, "vm-000")
    VM.objects.bulk_create(
        VM(project=prod, region=first.region, host=first.host, name=f"vm-{n:03}", flavor="std-2x4", vpc="v")
        for n in range(1, 61)
    )

    ids = cli(alice, "compute", "vm", "list", "-o", "id").out.splitlines()
    listed = json.loads(cli(alice, "compute", "vm", "list", "-o", "json").out)

    assert len(ids) == 61 and set(ids) == {str(pk) for pk in VM.objects.values_list("id", flat=True)}
    assert [vm["id"] for vm in listed] == ids


def test_volume_list_shows_size_attachment_and_filters_by_vm(cli, alice, make_vm, prod, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    db01 = make_vm(prod, "db-01", boot_gib=2)
    make_vm(prod, "web-01")

    result = cli(alice, "compute", "volume", "list", "--vm", "db-01")

    assert result.code == 0, result.err
    header, row = (line.split() for line in result.out.splitlines())
    assert header == ["ID", "NAME", "PROJECT", "REGION", "STATE", "SIZE", "VM", "DEVICE", "BOOTABLE", "TAGS"]
    volume = db01.volumes.get()
    assert row[0] == str(volume.id)
    assert row[1:] == ["db-01-boot", "acme/prod", "bd-dha-1", "attached", "2GiB", "db-01", "vda", "true", "-"]


def test_volume_create_attach_detach_resize_delete(cli, alice, make_vm, prod, dha):
    make_vm(prod, "web-02")
    as_alice = lambda *argv: cli(alice, "compute", "volume", *argv)  # noqa: E731

    created = as_alice(
        "create", "--name", "spare-01", "--size-gib", "2", "--project", "acme/prod", "-o", "json"
    )
    assert created.code == 0, created.err
    assert (json.loads(created.out)["size_bytes"], json.loads(created.out)["state"]) == (
        2 * 2**30,
        "creating",
    )
    assert as_alice("list", "-o", "json").out.count('"available"') == 1  # the worker made its file

    attached = as_alice("attach", "--volume", "spare-01", "--vm", "web-02", "-o", "json")
    assert attached.code == 0, attached.err
    assert json.loads(attached.out)["device"] == "vdb"

    detached = as_alice("detach", "--volume", "spare-01", "-o", "json")
    assert detached.code == 0 and json.loads(detached.out)["state"] == "detaching"
    resized = as_alice("resize", "--volume", "spare-01", "--size-gib", "3", "--wait", "-o", "json")
    assert resized.code == 0, resized.err
    assert (json.loads(resized.out)["state"], json.loads(resized.out)["size_bytes"]) == (
        "available",
        3 * 2**30,
    )

    deleted = as_alice("delete", "--volume", "spare-01", "--confirm", "spare-01")
    assert deleted.code == 0, deleted.err
    assert deleted.out.startswith("Deleting volume spare-01")
    assert not prod.volumes.filter(name="spare-01").exists()


def test_volume_bad_input_prints_the_error_and_exits_1(cli, alice, make_vm, prod, dha):
    make_vm(prod, "web-02")
    boot = prod.volumes.get(name="web-02-boot")

    shrink = cli(alice, "compute", "volume", "resize", "--volume", str(boot.pk), "--size-gib", "0")
    assert shrink.code == 1 and shrink.err.startswith("ERROR: InvalidRequest: The size must be")

    attached = cli(
        alice, "compute", "volume", "delete", "--volume", "web-02-boot", "--confirm", "web-02-boot"
    )
    assert attached.code == 1
    assert "attached to VM web-02 as vda: detach it first" in attached.err


def test_snapshot_restore_names_the_disk_by_device(cli, alice, committed, make_vm, prod, dha):
    from clouddigit.compute import services as compute
    from snapshots import services as snapshots

    vm = make_vm(prod, "db-01")
    data = created(
        compute.create_empty_volume(actor=alice, project=prod, region=dha, name="db-data", size_gib=1)
    )
    compute.attach_volume_to(actor=alice, volume=data, vm="db-01")
    with committed():
        snapshot = snapshots.create_snapshot(actor=alice, vm=vm, name="db-snap")

    result = cli(
        alice,
        "compute",
        "snapshot",
        "restore",
        "--snapshot",
        str(snapshot.pk),
        "--name",
        "inspect",
        "--disk",
        "vdb",
    )

    assert result.code == 0, result.err
    assert prod.volumes.get(name="inspect").size_bytes == 2**30
