from __future__ import annotations

import json
import sys

import pytest

from iam.models import RoleBinding
from iam.services import add_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def dave(django_user_model, acme):
    """A user of acme with no role yet."""
    user = django_user_model.objects.create_user("dave", password="dave-pass")
    add_member(actor=None, account=acme, username="dave")
    return user


def grant(cli, actor, *scope: str, role: str = "image.publisher", user: str = "dave", output: str = "id"):
    return cli(actor, "iam", "role", "grant", "--role", role, "--user", user, *scope, "-o", output)


def revoke(cli, actor, *argv: str):
    return cli(actor, "iam", "role", "revoke", *argv)


def test_granted_user_sees_the_projects_vms_and_nothing_of_other_accounts(
    cli, alice, dave, make_vm, prod, sandbox, globex_main
):
    db01 = make_vm(prod, "db-01")
    make_vm(sandbox, "sb-01")
    make_vm(globex_main, "gx-01")
    assert json.loads(cli(dave, "compute", "vm", "list", "-o", "json").out) == []

    granted = grant(cli, alice, "--project", "acme/prod", output="json")

    assert granted.code == 0, granted.err
    binding = json.loads(granted.out)
    assert (binding["role"], binding["user"], binding["account"], binding["project"]) == (
        "image.publisher",
        "dave",
        "acme",
        "acme/prod",
    )
    assert binding["granted_by"] == "alice"
    vms = json.loads(cli(dave, "compute", "vm", "list", "-o", "json").out)
    assert [(vm["id"], vm["project"]) for vm in vms] == [(str(db01.id), "acme/prod")]


def test_role_list_table_shows_principal_and_scope(cli, alice, bob, charlie, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal: with the header line
    result = cli(alice, "iam", "role", "list", "--user", "bob")

    rows = [line.split() for line in result.out.splitlines()]
    binding = RoleBinding.objects.get(user=bob)
    assert rows == [
        ["ID", "ROLE", "USER", "GROUP", "ACCOUNT", "PROJECT", "GRANTED_BY"],
        [str(binding.id), "image.publisher", "bob", "-", "acme", "acme/prod", "system"],
    ]


def test_revoke_by_id(cli, alice, dave, prod):
    binding_id = grant(cli, alice, "--project", "acme/prod").out.strip()

    result = revoke(cli, alice, "--id", binding_id)

    assert (result.code, result.out) == (0, f"Revoked role binding {binding_id}\n")
    assert cli(alice, "iam", "role", "list", "--user", "dave", "-o", "id").out == ""


def test_revoke_by_role_user_and_project(cli, alice, dave, prod, sandbox):
    grant(cli, alice, "--project", "acme/prod")
    kept = grant(cli, alice, "--project", "acme/sandbox").out.strip()

    result = revoke(cli, alice, "--role", "image.publisher", "--user", "dave", "--project", "acme/prod")

    assert result.code == 0, result.err
    assert cli(alice, "iam", "role", "list", "--user", "dave", "-o", "id").out.split() == [kept]


def test_revoke_by_account_leaves_the_project_binding(cli, alice, dave, prod):
    kept = grant(cli, alice, "--project", "acme/prod", role="image.viewer").out.strip()
    grant(cli, alice, "--account", "acme", role="image.viewer")

    result = revoke(cli, alice, "--role", "image.viewer", "--user", "dave", "--account", "acme")

    assert result.code == 0, result.err
    assert cli(alice, "iam", "role", "list", "--user", "dave", "-o", "id").out.split() == [kept]


def test_revoke_of_a_binding_that_does_not_exist_is_an_error(cli, alice, bob):
    result = revoke(cli, alice, "--role", "image.admin", "--user", "bob", "--project", "acme/prod")

    assert result.code == 1
    assert result.err == (
        "ERROR: NotFound: no binding of image.admin to user bob on project acme/prod that you can see\n"
    )
    assert RoleBinding.objects.filter(user=bob).exists()


def test_outsider_cannot_revoke_and_learns_nothing(cli, bob, charlie):
    binding = RoleBinding.objects.get(user=bob)

    result = revoke(cli, charlie, "--id", str(binding.id))

    assert (result.code, result.err) == (1, "ERROR: NotFound: Not found, or you may not see it.\n")
    assert RoleBinding.objects.filter(pk=binding.pk).exists()


@pytest.mark.parametrize(
    ("role", "user", "message"),
    [
        ("nope", "dave", 'InvalidRequest: role: "nope" is not a valid choice.'),
        ("image.viewer", "zed", "InvalidRequest: No user named 'zed' in account acme."),
        ("image.viewer", "charlie", "InvalidRequest: No user named 'charlie' in account acme."),
    ],
)
def test_bad_grant_prints_the_api_error(cli, alice, charlie, dave, prod, role, user, message):
    result = grant(cli, alice, "--project", "acme/prod", role=role, user=user)

    assert (result.code, result.out, result.err) == (1, "", f"ERROR: {message}\n")
    assert not RoleBinding.objects.filter(user=dave).exists()
    assert not RoleBinding.objects.filter(account__slug="acme", user=charlie).exists()


def test_revoke_with_id_and_a_principal_is_a_usage_error(run, capsys):
    with pytest.raises(SystemExit) as exited:
        run("iam", "role", "revoke", "--id", "x", "--user", "bob")

    assert exited.value.code == 2
    assert "--id names the binding by itself" in capsys.readouterr().err
