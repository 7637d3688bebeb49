"""Granting and revoking roles. A binding's permissions are written as guardian object permissions on its
project or account; `_sync_permissions` recomputes them from the bindings, so grant and revoke are one
idempotent step."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from guardian.shortcuts import assign_perm, get_group_perms, get_user_perms, remove_perm

from clouddigit.access import actor_name, require
from clouddigit.audit.log import audited
from clouddigit.compute.models import Account, Project
from clouddigit.compute.permissions import CODENAMES, Perm
from clouddigit.errors import Conflict, InvalidRequest, PermissionRefused
from iam.models import AccountMember, RoleBinding
from iam.roles import ROLES, permissions_of


def _principal(actor, account: Account, username: str, group_name: str):
    """The user or group a grant names. An account admin reaches only the account's own members, and
    "no such name" and "not of this account" are one answer, so a grant reveals nothing about other
    accounts. The platform reaches anyone."""
    if bool(username) == bool(group_name):
        raise InvalidRequest("Name either a user or a group to grant the role to.", field="user")
    platform = _is_platform(actor)
    if username:
        users = get_user_model().objects.filter(username=username, is_active=True)
        user = (users if platform else users.filter(account_memberships__account=account)).first()
        if user is None:
            raise InvalidRequest(f"No user named {username!r} in account {account}.", field="user")
        return user
    groups = Group.objects.filter(name=group_name)
    group = (groups if platform else groups.filter(account_memberships__account=account)).first()
    if group is None:
        raise InvalidRequest(f"No group named {group_name!r} in account {account}.", field="group")
    return group


def _is_platform(actor) -> bool:
    """The system or a superuser: who places users in accounts."""
    return actor is None or actor.is_superuser


def _place(actor, account: Account, principal) -> AccountMember:
    kind = "group" if isinstance(principal, Group) else "user"
    member, _ = AccountMember.objects.get_or_create(
        account=account,
        **{kind: principal},
        defaults={"added_by": actor_name(actor)},
    )
    return member


@audited("iam.member.add", target="account")
def add_member(*, actor, account: Account, username: str = "", group_name: str = "") -> AccountMember:
    """Place a user or group in an account (platform staff only), so that its admins can grant it roles."""
    if not _is_platform(actor):
        raise PermissionRefused(
            f"Only platform staff add users to account {account}: ask them to add the user, then grant it "
            "a role."
        )
    return _place(actor, account, _principal(actor, account, username, group_name))


def _bindings_of(principal, scope):
    bindings = RoleBinding.objects.filter(**{"group" if isinstance(principal, Group) else "user": principal})
    if isinstance(scope, Project):
        return bindings.filter(project=scope)
    return bindings.filter(account=scope, project__isnull=True)


def _sync_permissions(principal, scope) -> None:
    wanted = permissions_of(_bindings_of(principal, scope).values_list("role", flat=True))
    held_now = (
        get_group_perms(principal, scope)
        if isinstance(principal, Group)
        else get_user_perms(principal, scope)
    )
    held: set[str] = set(held_now) & set(CODENAMES)
    for codename in sorted(wanted - held):
        assign_perm(codename, principal, scope)
    for codename in sorted(held - wanted):
        remove_perm(codename, principal, scope)


@audited("iam.role.grant")
def grant_role(
    *,
    actor,
    role: str,
    account: Account,
    project: Project | None = None,
    username: str = "",
    group_name: str = "",
) -> RoleBinding:
    require(actor, Perm.MANAGE_ROLES, account, "grant roles")
    if role not in ROLES:
        raise InvalidRequest(f"Unknown role {role!r}; the roles are {', '.join(ROLES)}.", field="role")
    if project is not None and project.account_id != account.pk:
        raise InvalidRequest(f"Project {project} is not in account {account}.", field="project")
    if ROLES[role].account_only and project is not None:
        raise InvalidRequest(f"{role} is granted on a whole account, not on one project.", field="project")
    principal = _principal(actor, account, username, group_name)
    if _is_platform(actor):
        _place(actor, account, principal)  # the platform's grant makes the principal one of the account
    kind = "group" if isinstance(principal, Group) else "user"
    try:
        with transaction.atomic():
            binding = RoleBinding.objects.create(
                role=role,
                account=account,
                project=project,
                granted_by=actor_name(actor),
                **{kind: principal},
            )
    except IntegrityError:
        where = f"project {project}" if project else f"account {account}"
        raise Conflict(f"{kind} {principal} already has {role} on {where}.", field="role") from None
    _sync_permissions(principal, binding.scope)
    return binding


@audited("iam.role.revoke", target="binding")
def revoke_role(*, actor, binding: RoleBinding) -> None:
    require(actor, Perm.MANAGE_ROLES, binding.account, "revoke roles")
    if binding.role == "account.admin" and binding.project_id is None:
        admins = RoleBinding.objects.filter(
            account=binding.account, role="account.admin", project__isnull=True
        )
        if admins.count() == 1:
            raise Conflict(
                f"This is the last account.admin binding of {binding.account}; grant account.admin to "
                "someone else first, so that the account keeps an admin."
            )
    principal, scope = binding.principal, binding.scope
    binding.delete()
    _sync_permissions(principal, scope)


def effective_roles(user) -> list[dict]:
    """For each project the user can reach: the bindings that apply (own, through groups, account-wide)
    and the permissions they add up to. For the console's "effective permissions" page."""
    bindings = list(RoleBinding.objects.filter(user=user).select_related("account", "project")) + list(
        RoleBinding.objects.filter(group__in=user.groups.all()).select_related("account", "project", "group")
    )
    projects = Project.objects.filter(account__in={b.account_id for b in bindings}).select_related("account")
    rows = []
    for project in projects:
        applying = [
            b
            for b in bindings
            if b.project_id == project.pk or (b.project_id is None and b.account_id == project.account_id)
        ]
        if applying:
            rows.append(
                {
                    "project": project,
                    "bindings": applying,
                    "permissions": sorted(permissions_of(b.role for b in applying)),
                }
            )
    return rows
