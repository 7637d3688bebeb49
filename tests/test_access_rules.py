"""The access rules are written once: one `Perm` enum, one project-scoped `visible_to`, one lookup of a
project by reference, one name for the acting user."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import AnonymousUser, Permission

from clouddigit.access import actor_name, can, project_by_reference
from clouddigit.compute.models import Account, Project
from clouddigit.compute.permissions import Perm
from clouddigit.errors import InvalidRequest
from snapshots.models import Restore

ROOT = Path(__file__).resolve().parent.parent
CODE = ["clouddigit", "iam", "snapshots", "images", "policies", "templates"]


def test_every_perm_exists_on_both_project_and_account(db):
    for model in (Project, Account):
        permissions = Permission.objects.filter(
            content_type__app_label="compute", content_type__model=model._meta.model_name
        )
        held = set(permissions.values_list("codename", flat=True))
        assert set(Perm.values) <= held, f"{model.__name__} lacks {set(Perm.values) - held}"


def test_no_permission_is_spelt_as_a_string_in_the_code():
    """Code names a permission as `Perm.X`; a string such as "compute.view_images" escapes the check."""
    literal = re.compile(r"""["'](?:compute\.)?(""" + "|".join(Perm.values) + r""")["']""")
    found = []
    for top in CODE:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix not in {".py", ".html"} or "migrations" in path.parts:
                continue
            if path == ROOT / "clouddigit" / "compute" / "permissions.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if literal.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_a_permission_not_in_perm_is_refused(alice, prod):
    with pytest.raises(ValueError):
        can(alice, "compute.view_images", prod)
    with pytest.raises(ValueError):
        Project.objects.visible_to(alice, "compute.view_images")


def test_accounts_are_visible_through_a_grant_on_the_account_or_on_one_of_its_projects(
    alice, bob, charlie, acme, globex
):
    assert list(Account.objects.visible_to(alice)) == [acme]
    assert list(Account.objects.visible_to(bob, Perm.PUBLISH_IMAGES)) == [acme]
    assert list(Account.objects.visible_to(bob, Perm.MANAGE_ROLES)) == []
    assert list(Account.objects.visible_to(charlie)) == [globex]
    assert list(Account.objects.visible_to(AnonymousUser())) == []


def test_restores_are_seen_by_who_may_see_the_projects_snapshots(alice, bob, charlie, prod):
    restore = Restore.objects.create(project=prod, snapshot_name="nightly", kind="volume", name="copy")
    assert list(Restore.objects.visible_to(alice)) == [restore]
    assert list(Restore.objects.visible_to(bob)) == []  # an image publisher does not see snapshots
    assert list(Restore.objects.visible_to(bob, Perm.PUBLISH_IMAGES)) == [restore]
    assert list(Restore.objects.visible_to(charlie)) == []


def test_a_project_is_found_by_reference_among_those_the_user_may_see(alice, bob, charlie, prod, sandbox):
    assert project_by_reference(alice, "acme/prod") == prod
    assert project_by_reference(alice, str(sandbox.pk)) == sandbox
    assert project_by_reference(bob, "acme/prod", Perm.PUBLISH_IMAGES) == prod
    for user, reference in [(bob, "acme/sandbox"), (charlie, "acme/prod"), (alice, "nonsense"), (alice, "")]:
        with pytest.raises(InvalidRequest, match="that you can see"):
            project_by_reference(user, reference)


def test_the_actor_is_named_once(alice):
    assert actor_name(alice) == "alice"
    assert actor_name(None) == "system"
    assert actor_name(AnonymousUser()) == "anonymous"


def test_no_record_names_its_actor_by_hand():
    """`access.actor_name` is the one place that turns an actor into the name a record keeps."""
    by_hand = re.compile(r"get_username\(\) if ")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for top in CODE
        for path in sorted((ROOT / top).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if by_hand.search(line) and path != ROOT / "clouddigit" / "access.py"
    ]
    assert found == []
