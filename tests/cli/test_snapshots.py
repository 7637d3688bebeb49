"""`clouddigit compute snapshot ...` and `compute vm restore` against a live server; tasks run eagerly
right after each commit, so snapshots and restores complete during the request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from clouddigit.compute import services as compute
from clouddigit.compute.models import VM
from snapshots import services
from snapshots.models import Restore, Snapshot
from tests.worker import created

pytestmark = pytest.mark.django_db

SCRIPT = Path(sys.executable).parent / "clouddigit"
HEADER = ["ID", "NAME", "VM", "VOLUMES", "STATE", "CONSISTENCY", "CREATED", "POLICY", "TAGS"]
POLICY = {"origin": "policy", "policy_name": "acme-prod-default"}


@pytest.fixture
def data_volume(prod, dha, committed):
    with committed():
        return created(
            compute.create_volume(actor=None, project=prod, region=dha, name="data-01", size_bytes=2**24)
        )


def lines(result) -> list[list[str]]:
    assert result.code == 0, result.err
    return [line.split() for line in result.out.splitlines()]


@pytest.mark.django_db(transaction=True)
def test_the_spec_pipelines_run_in_a_shell(live_server, alice, make_vm, prod):
    """Verbatim from the spec (with `clouddigit` for `cd`): the per-VM count and the restore drill."""
    db01, web01 = make_vm(prod, "db-01"), make_vm(prod, "web-01")
    for vm in (db01, db01, web01):
        services.create_snapshot(actor=None, vm=vm, **POLICY)
    services.create_snapshot(actor=None, vm=web01, name="manual")  # not the policy's: not counted
    env = {name: value for name, value in os.environ.items() if not name.startswith("CLOUDDIGIT_")}
    env |= {
        "PATH": f"{SCRIPT.parent}:{env['PATH']}",
        "CLOUDDIGIT_URL": live_server.url,
        "CLOUDDIGIT_TOKEN": Token.objects.create(user=alice).key,
    }
    script = """set -euo pipefail
clouddigit compute snapshot list --policy acme-prod-default --since 24h \\
  | awk '{print $3}' | sort | uniq -c | sort -n
SNAP=$(clouddigit compute snapshot list --vm db-01 --latest 1 -o id)
clouddigit compute vm restore \\
  --snapshot $SNAP \\
  --name db-01-restored-2026-11-26 \\
  --vpc sandbox-vpc
echo "snap=$SNAP"
"""

    shell = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False
    )

    assert shell.returncode == 0, shell.stderr
    counts, restore_line, snap_line = shell.stdout.splitlines()[:2], *shell.stdout.splitlines()[2:]
    assert [line.split() for line in counts] == [["1", "web-01"], ["2", "db-01"]]
    newest = Snapshot.objects.filter(vm=db01).order_by("-created_at").first()
    assert snap_line == f"snap={newest.pk}"
    restore = Restore.objects.get(pk=restore_line.split()[0])
    assert restore_line.split()[1:4] == ["db-01-restored-2026-11-26", "vm", "done"]
    assert (restore.snapshot_id, restore.state, restore.kind) == (newest.pk, Restore.State.DONE, "vm")
    restored = VM.objects.get(name="db-01-restored-2026-11-26")
    assert (restored.vpc, restored.state, restore.vm_id) == ("sandbox-vpc", VM.State.RUNNING, restored.pk)


def test_list_prints_vm_names_in_the_third_column_and_a_header_only_on_a_terminal(
    cli, alice, make_vm, prod, data_volume, monkeypatch, committed
):
    db01 = make_vm(prod, "db-01")
    with committed():
        compute.attach_volume(actor=None, volume=data_volume, vm=db01, device="vdb")
        vm_snapshot = services.create_snapshot(actor=None, vm=db01, **POLICY)
        volume_snapshot = services.create_snapshot(actor=None, volume=data_volume, tags={"env": "prod"})

    piped = lines(cli(alice, "compute", "snapshot", "list"))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    on_terminal = lines(cli(alice, "compute", "snapshot", "list"))

    assert on_terminal[0] == HEADER and on_terminal[1:] == piped
    assert [row[2] for row in piped] == ["db-01", "db-01"]  # a volume snapshot of an attached volume too
    newest, older = piped
    assert newest[:6] == [str(volume_snapshot.pk), volume_snapshot.name, "db-01", "data-01", "available"] + [
        "application"
    ]
    assert newest[7:] == ["-", "env=prod"]
    assert older[:6] == [
        str(vm_snapshot.pk),
        vm_snapshot.name,
        "db-01",
        "db-01-boot,data-01",
        "available",
    ] + ["application"]
    assert older[7:] == ["acme-prod-default", "-"]
    assert newest[6].endswith("Z") and len(newest[6]) == len("2026-11-26T02:00:03Z")


def test_list_filters_by_state(cli, alice, data_volume, committed):
    with committed():
        available = services.create_snapshot(actor=None, volume=data_volume)
        failed = services.create_snapshot(actor=None, volume=data_volume)
    Snapshot.objects.filter(pk=failed.pk).update(state=Snapshot.State.ERROR)

    failed_only = lines(cli(alice, "compute", "snapshot", "list", "--state", "error", "-o", "id"))
    available_only = lines(cli(alice, "compute", "snapshot", "list", "--state", "available", "-o", "id"))
    assert (failed_only, available_only) == ([[str(failed.pk)]], [[str(available.pk)]])


def test_create_by_name_and_id_output_is_bare_ids(cli, alice, make_vm, prod, data_volume):
    created = cli(
        alice, "compute", "snapshot", "create", "--volume", "data-01", "--tag", "env=prod", "-o", "id"
    )
    vm_snapshot = cli(alice, "compute", "snapshot", "create", "--vm", "db-01", "-o", "id")

    assert created.code == 0, created.err
    snapshot = Snapshot.objects.get(pk=created.out.strip())
    assert (snapshot.state, snapshot.tags, snapshot.kind) == (
        Snapshot.State.AVAILABLE,
        {"env": "prod"},
        "volume",
    )
    assert vm_snapshot.code == 1
    assert vm_snapshot.err == "ERROR: NotFound: no VM named 'db-01' that you can see\n"
    make_vm(prod, "db-01")
    second = cli(alice, "compute", "snapshot", "create", "--vm", "db-01", "--name", "nightly", "-o", "id")
    ids = cli(alice, "compute", "snapshot", "list", "-o", "id").out.splitlines()
    assert ids == [second.out.strip(), str(snapshot.pk)]
    assert (
        cli(alice, "compute", "snapshot", "list", "--since", "1h", "--latest", "1", "-o", "id").out
        == second.out
    )


def test_a_name_in_two_projects_is_ambiguous_until_the_project_is_named(cli, alice, make_vm, prod, sandbox):
    in_prod, in_sandbox = make_vm(prod, "db-01"), make_vm(sandbox, "db-01")

    result = cli(alice, "compute", "snapshot", "create", "--vm", "db-01")

    assert result.code == 1
    assert result.err.startswith("ERROR: Ambiguous: 2 VMs are named 'db-01' (")
    assert f"{in_prod.pk} in acme/prod" in result.err and f"{in_sandbox.pk} in acme/sandbox" in result.err
    narrowed = cli(
        alice, "compute", "snapshot", "create", "--vm", "db-01", "--project", "acme/sandbox", "-o", "json"
    )
    assert json.loads(narrowed.out)["project"] == "acme/sandbox"


@pytest.mark.django_db(transaction=True)
def test_show_restore_tag_and_delete(live_cli, alice, data_volume):
    snapshot_id = live_cli(
        alice, "compute", "snapshot", "create", "--volume", "data-01", "--name", "before", "-o", "id"
    )
    snapshot_id = snapshot_id.out.strip()

    restored = live_cli(
        alice,
        "compute",
        "snapshot",
        "restore",
        "--snapshot",
        "before",
        "--name",
        "data-01-copy",
        "-o",
        "json",
    )
    tagged = live_cli(
        alice, "compute", "snapshot", "tag", "--snapshot", snapshot_id, "--add", "env=prod", "-o", "json"
    )
    shown = live_cli(alice, "compute", "snapshot", "show", "--snapshot", snapshot_id)

    assert restored.code == 0, restored.err
    restore = json.loads(restored.out)
    assert (restore["state"], restore["name"], restore["kind"]) == ("done", "data-01-copy", "volume")
    assert json.loads(tagged.out)["tags"] == {"env": "prod"}
    text = shown.out
    assert f"ID           {snapshot_id}\nNAME         before\nPROJECT      acme/prod\n" in text
    assert "CONSISTENCY  application: the disks were at rest (VM stopped or volume not attached)\n" in text
    assert "TAGS         env=prod\n" in text
    disks_header, disk = (line.split() for line in text.split("\nDISKS\n")[1].splitlines()[:2])
    assert disks_header == ["DEVICE", "VOLUME", "BOOTABLE", "SIZE", "LAYER", "PARENT_LAYER", "CHECKSUM"]
    assert disk[:4] == ["-", "data-01", "false", "16MiB"] and len(disk[6]) == 64
    assert "\nRESTORES\n" in text and "data-01-copy  volume  done" in text

    deleted = live_cli(
        alice, "compute", "snapshot", "delete", "--snapshot", snapshot_id, "--confirm", "before"
    )
    assert deleted.code == 0, deleted.err
    assert deleted.out.startswith(f"Deleting snapshot before ({snapshot_id}): ")
    assert not Snapshot.objects.filter(pk=snapshot_id).exists()


def test_diagnose_prints_cause_check_fix_and_detail(cli, alice, data_volume, monkeypatch, committed):
    with committed():
        taken = services.create_snapshot(actor=None, volume=data_volume, name="taken")
    monkeypatch.setattr("snapshots.services.enqueue", lambda *args, **kwargs: None)  # no worker takes it
    waiting = services.create_snapshot(actor=None, volume=data_volume, name="waiting")

    result = cli(alice, "compute", "snapshot", "diagnose", "--snapshot", str(waiting.pk))

    assert result.code == 0, result.err
    assert result.out == (
        f"snapshot waiting ({waiting.pk}) is creating: queued for the hypervisor worker\n"
        "\n"
        "cause:  Snapshot backend slow\n"
        "check:  Console → Platform → Backend status\n"
        "fix:    Wait, or open a ticket if sustained\n"
        "detail: queued 0.0 min ago; no worker has reported for over 90 s\n"
    )
    assert (
        cli(alice, "compute", "snapshot", "diagnose", "--snapshot", "taken").out == "not waiting: available\n"
    )
    as_json = json.loads(
        cli(alice, "compute", "snapshot", "diagnose", "--snapshot", str(taken.pk), "-o", "json").out
    )
    assert (as_json["state"], as_json["findings"]) == ("available", [])


def test_rollback_needs_the_volume_name_and_errors_print_code_and_message(cli, alice, data_volume, committed):
    with committed():
        snapshot = services.create_snapshot(actor=None, volume=data_volume, name="good")

    refused = cli(alice, "compute", "snapshot", "rollback", "--snapshot", "good", "--confirm", "yes")
    rolled = cli(
        alice, "compute", "snapshot", "rollback", "--snapshot", "good", "--confirm", "data-01", "-o", "id"
    )

    assert (refused.code, refused.out) == (1, "")
    assert refused.err == (
        "ERROR: InvalidRequest: Roll-back replaces the current data and is not undoable. Type 'data-01' to "
        "confirm (a safety snapshot of the current data is kept for 24 hours).\n"
    )
    assert rolled.code == 0, rolled.err
    safety = Snapshot.objects.get(pk=rolled.out.strip())
    assert (safety.origin, safety.rollback_of_id, safety.state) == ("safety", snapshot.pk, "available")
    assert rolled.err.startswith(
        f"note: the replaced data is kept in safety snapshot {safety.name} ({safety.pk})"
    )
    missing = cli(alice, "compute", "snapshot", "show", "--snapshot", "00000000-0000-0000-0000-000000000000")
    assert (missing.code, missing.err) == (1, "ERROR: NotFound: Not found, or you may not see it.\n")


@pytest.mark.django_db(transaction=True)
def test_vm_restore_onto_an_unlike_flavor_needs_yes(live_cli, alice, make_vm, prod, committed):
    batch = make_vm(prod, "batch-01", flavor="bm-c1")
    with committed():
        snapshot = services.create_snapshot(actor=None, vm=batch)
    argv = ["compute", "vm", "restore", "--snapshot", str(snapshot.pk), "--name", "b2", "--vpc", "v"]

    refused = live_cli(alice, *argv, "--flavor", "std-2x4")

    assert refused.code == 1
    assert refused.err.startswith("ERROR: RestoreNeedsConfirmation: Kernel panic on init is likely: ")
    assert not VM.objects.filter(name="b2").exists()
    accepted = live_cli(alice, *argv, "--flavor", "std-2x4", "--yes")
    assert accepted.code == 0, accepted.err
    row = accepted.out.split()
    assert row[1:4] == ["b2", "vm", "done"] and row[5] == snapshot.name
    assert accepted.err.startswith("warning: Kernel panic on init is likely")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tag", "--snapshot", "x"], "give --add KEY=VALUE and/or --remove KEY"),
        (["tag", "--snapshot", "x", "--add", "novalue"], "--add takes KEY=VALUE, not 'novalue'"),
        (["create", "--volume", "v", "--tag", "=x"], "--tag takes KEY=VALUE, not '=x'"),
        (["create", "--volume", "v", "--vm", "w"], "argument --vm: not allowed with argument --volume"),
    ],
)
def test_usage_mistakes_exit_2_before_any_request(run, capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        run("compute", "snapshot", *argv)

    assert exited.value.code == 2
    assert message in capsys.readouterr().err
