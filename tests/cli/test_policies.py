"""`clouddigit compute snapshot policy apply|export|list` against a live server."""

from __future__ import annotations

import io
import json
import sys

import pytest

from clouddigit.compute import work as compute_work
from policies import services
from policies.models import Policy
from policies.spec import parse
from tests.policies.test_spec import EXAMPLE

pytestmark = pytest.mark.django_db


def test_apply_a_file_then_export_prints_yaml_that_parses_back(cli, snap_admin, prod, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE)

    applied = cli(
        snap_admin, "compute", "snapshot", "policy", "apply", "-f", str(path), "--project", "acme/prod"
    )

    assert applied.code == 0, applied.err
    policy = Policy.objects.get()
    row = applied.out.split()
    assert row[:3] == [str(policy.pk), "acme-prod-default", "acme/prod"]
    assert "daily=02:00_BDT,weekly=Sun_03:00_BDT" in row and "daily=7,weekly=4" in row and "env=prod" in row

    exported = cli(snap_admin, "compute", "snapshot", "policy", "export", "acme-prod-default")

    assert exported.code == 0, exported.err
    assert exported.out == policy.parsed.to_yaml()
    assert parse(exported.out) == parse(EXAMPLE)


def test_apply_reads_stdin_and_replaces_the_policy(cli, alice, prod, monkeypatch):
    services.apply_policy(actor=None, project=prod, text=EXAMPLE)
    monkeypatch.setattr(sys, "stdin", io.StringIO(EXAMPLE.replace("weekly: 4", "weekly: 8")))

    result = cli(
        alice, "compute", "snapshot", "policy", "apply", "-f", "-", "--project", "acme/prod", "-o", "json"
    )

    assert result.code == 0, result.err
    assert json.loads(result.out)["retention"] == {"daily": 7, "weekly": 8}
    assert Policy.objects.get().applied_by == "alice"


def test_bad_yaml_is_an_invalid_policy_error_naming_the_line(cli, alice, prod, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE.replace("  daily: 7\n", "\tdaily: 7\n"))

    result = cli(alice, "compute", "snapshot", "policy", "apply", "-f", str(path), "--project", "acme/prod")

    assert result.code == 1 and result.out == ""
    assert result.err.startswith("ERROR: InvalidPolicy: line 6: not valid YAML: found character '\\t'")
    assert not Policy.objects.exists()
    missing = cli(
        alice,
        "compute",
        "snapshot",
        "policy",
        "apply",
        "-f",
        str(tmp_path / "nope.yaml"),
        "--project",
        "acme/prod",
    )
    assert (missing.code, missing.err) == (
        1,
        f"ERROR: CannotRead: {tmp_path / 'nope.yaml'}: No such file or directory\n",
    )


def test_an_operator_is_refused(cli, operator, prod, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE)

    result = cli(
        operator, "compute", "snapshot", "policy", "apply", "-f", str(path), "--project", "acme/prod"
    )

    assert result.code == 1 and result.err.startswith(
        "ERROR: PermissionDenied: You may not apply snapshot policies"
    )


def test_export_of_a_name_in_two_projects_needs_the_project_and_list_filters_by_it(cli, alice, prod, sandbox):
    services.apply_policy(actor=None, project=prod, text=EXAMPLE)
    services.apply_policy(actor=None, project=sandbox, text=EXAMPLE.replace("env=prod", "env=dev"))

    ambiguous = cli(alice, "compute", "snapshot", "policy", "export", "acme-prod-default")
    assert ambiguous.code == 1
    assert ambiguous.err == (
        "ERROR: Ambiguous: 2 projects have a policy named 'acme-prod-default' (acme/prod, acme/sandbox): "
        "give --project\n"
    )
    in_sandbox = cli(
        alice, "compute", "snapshot", "policy", "export", "acme-prod-default", "--project", "acme/sandbox"
    )
    assert in_sandbox.code == 0 and parse(in_sandbox.out).vm_tags == (("env", "dev"),)
    unknown = cli(
        alice, "compute", "snapshot", "policy", "export", "acme-prod"
    )  # a part of a name is not a name
    assert unknown.err == "ERROR: NotFound: no snapshot policy named 'acme-prod' that you can see\n"

    listed = cli(alice, "compute", "snapshot", "policy", "list", "--project", "acme/sandbox", "-o", "id")
    assert listed.out.split() == [str(Policy.objects.get(project=sandbox).pk)]


def test_simulate_prints_every_snapshot_and_whether_it_is_kept(
    cli, snap_admin, prod, make_vm, tmp_path, settings
):
    from clouddigit.compute import services as compute

    settings.POLICY_SPREAD_MINUTES = 0
    vm = make_vm(prod, "db-01", tags={"env": "prod"})
    compute.start_vm(actor=None, vm=vm)
    compute_work.apply_power_state(str(vm.pk))
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE)

    result = cli(
        snap_admin,
        "compute",
        "snapshot",
        "policy",
        "simulate",
        "-f",
        str(path),
        "--project",
        "acme/prod",
        "--start",
        "2026-01-01T00:00",
        "--days",
        "60",
        "-o",
        "json",
    )

    assert result.code == 0, result.err
    created = json.loads(result.out)["created"]
    kept = [row for row in created if row["kept"]]
    assert len(created) > 60 and {row["vm"] for row in created} == {"db-01"}
    assert sorted(row["class"] for row in kept) == ["daily"] * 7 + ["weekly"] * 4
    assert not Policy.objects.exists()  # a simulation saves nothing

    table = cli(
        snap_admin,
        "compute",
        "snapshot",
        "policy",
        "simulate",
        "-f",
        str(path),
        "--project",
        "acme/prod",
        "--start",
        "2026-01-01T00:00",
        "--days",
        "7",
    )
    assert table.out.splitlines()[0].split()[0] == "db-01" and "existing snapshots: 0 kept" in table.err
