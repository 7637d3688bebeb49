from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from clouddigit.access import can
from clouddigit.audit.models import AuditEntry
from clouddigit.compute.models import VM
from clouddigit.errors import Conflict, InvalidRequest, PermissionRefused
from iam.models import RoleBinding
from iam.roles import ROLES
from iam.services import add_member, effective_roles, grant_role, revoke_role


def new_member(django_user_model, account, username: str = "dave"):
    """A user of `account` with no role yet, as the platform places one."""
    user = django_user_model.objects.create_user(username)
    add_member(actor=None, account=account, username=username)
    return user


def test_the_spec_image_roles_exist_with_their_powers():
    assert {"image.viewer", "image.publisher", "image.admin", "image.cis-attestor"} <= set(ROLES)
    assert "publish_images" not in ROLES["image.viewer"].permissions
    assert "share_images" not in ROLES["image.publisher"].permissions
    assert ROLES["image.publisher"].permissions < ROLES["image.admin"].permissions
    assert "attest_images" in ROLES["image.cis-attestor"].permissions
    assert "rollback_snapshots" in ROLES["snapshot.admin"].permissions
    assert "rollback_snapshots" not in ROLES["snapshot.operator"].permissions
    assert not any(
        p.startswith(("operate", "create", "publish", "manage")) for p in ROLES["auditor"].permissions
    )


def test_grant_makes_the_project_visible_and_revoke_takes_it_away(
    alice, prod, sandbox, make_vm, django_user_model
):
    make_vm(prod, "db-01")
    make_vm(sandbox, "dev-01")
    dave = new_member(django_user_model, prod.account)
    assert not VM.objects.visible_to(dave).exists()

    binding = grant_role(
        actor=alice, role="image.publisher", account=prod.account, project=prod, username="dave"
    )
    assert list(VM.objects.visible_to(dave).values_list("name", flat=True)) == ["db-01"]
    assert can(dave, "publish_images", prod) and not can(dave, "publish_images", sandbox)

    revoke_role(actor=alice, binding=binding)
    dave = django_user_model.objects.get(pk=dave.pk)  # guardian caches permissions per user object
    assert not VM.objects.visible_to(dave).exists()
    assert not can(dave, "publish_images", prod)


def test_revoking_one_of_two_roles_keeps_what_the_other_grants(alice, prod, django_user_model):
    new_member(django_user_model, prod.account)
    viewer = grant_role(
        actor=alice, role="snapshot.viewer", account=prod.account, project=prod, username="dave"
    )
    grant_role(actor=alice, role="image.viewer", account=prod.account, project=prod, username="dave")

    revoke_role(actor=alice, binding=viewer)
    dave = django_user_model.objects.get(username="dave")
    assert can(dave, "view_inventory", prod) and can(dave, "view_images", prod)
    assert not can(dave, "view_snapshots", prod)


def test_group_bindings_reach_the_members(alice, prod, django_user_model):
    ops = Group.objects.create(name="ops")
    erin = django_user_model.objects.create_user("erin")
    erin.groups.add(ops)
    add_member(actor=None, account=prod.account, group_name="ops")
    grant_role(actor=alice, role="snapshot.operator", account=prod.account, project=prod, group_name="ops")
    assert can(erin, "create_snapshots", prod)
    [row] = effective_roles(erin)
    assert row["project"] == prod and "create_snapshots" in row["permissions"]


def test_only_account_admins_grant(bob, prod, django_user_model):
    django_user_model.objects.create_user("dave")
    with pytest.raises(PermissionRefused):
        grant_role(actor=bob, role="image.admin", account=prod.account, project=prod, username="dave")
    entry = AuditEntry.objects.get(action="iam.role.grant", outcome="refused")
    assert (entry.outcome, entry.actor_name, entry.account) == ("refused", "bob", prod.account)


def test_an_outsider_cannot_grant_in_another_account(charlie, prod):
    with pytest.raises(PermissionRefused):
        grant_role(actor=charlie, role="image.admin", account=prod.account, project=prod, username="charlie")
    assert not RoleBinding.objects.filter(user=charlie, account=prod.account).exists()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"role": "image.superuser", "username": "dave"}, "role"),
        ({"role": "auditor", "username": "dave"}, "project"),  # auditor is account-wide only
        ({"role": "image.viewer", "username": "nobody"}, "user"),
        ({"role": "image.viewer"}, "user"),
    ],
)
def test_bad_grants_name_the_field(alice, prod, django_user_model, kwargs, field):
    new_member(django_user_model, prod.account)
    with pytest.raises(InvalidRequest) as refused:
        grant_role(actor=alice, account=prod.account, project=prod, **kwargs)
    assert refused.value.field == field
    assert not RoleBinding.objects.exclude(user__username="alice").exists()


def test_a_duplicate_grant_is_a_conflict(alice, prod, bob):
    with pytest.raises(Conflict, match="already has image.publisher"):
        grant_role(actor=alice, role="image.publisher", account=prod.account, project=prod, username="bob")


def test_the_last_account_admin_cannot_be_revoked(alice, acme):
    binding = RoleBinding.objects.get(user=alice, role="account.admin")
    with pytest.raises(Conflict, match="last account.admin"):
        revoke_role(actor=alice, binding=binding)


def test_admin_grants_and_revokes_in_the_console(client, alice, prod, django_user_model):
    new_member(django_user_model, prod.account)
    client.force_login(alice)
    page = client.get(reverse("iam:bindings")).content.decode()
    assert "Grant a role" in page and "image.cis-attestor" in page

    response = client.post(
        reverse("iam:grant"),
        {"account": "acme", "user": "dave", "role": "image.publisher", "where": str(prod.pk)},
    )
    assert response.status_code == 302
    binding = RoleBinding.objects.get(user__username="dave")
    assert binding.project == prod
    page = client.get(reverse("iam:bindings")).content.decode()
    assert "dave" in page and "Granted image.publisher" in page

    effective = client.get(reverse("iam:effective", args=["dave"])).content.decode()
    assert "publish_images" in effective and "acme/prod" in effective

    client.post(reverse("iam:revoke", args=[binding.pk]), {"confirmed": "yes"})
    assert not RoleBinding.objects.filter(user__username="dave").exists()


def test_console_grant_form_errors_are_shown_and_audited(client, alice, prod):
    client.force_login(alice)
    response = client.post(reverse("iam:grant"), {"account": "acme", "user": "ghost", "role": "image.viewer"})
    assert response.status_code == 400
    assert "No user named &#x27;ghost&#x27; in account acme." in response.content.decode()
    assert AuditEntry.objects.filter(action="iam.role.grant", outcome="refused").exists()


def test_a_publisher_sees_no_grant_form_and_only_own_bindings(client, bob, alice):
    client.force_login(bob)
    page = client.get(reverse("iam:bindings")).content.decode()
    assert "Grant a role" not in page
    assert (
        client.post(reverse("iam:revoke", args=[RoleBinding.objects.get(user=alice).pk])).status_code == 404
    )
    assert client.get(reverse("iam:effective", args=["alice"])).status_code == 404
    assert "publish_images" in client.get(reverse("iam:effective", args=["bob"])).content.decode()
