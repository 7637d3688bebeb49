"""The one permission policy: a permission held on a project, or on the project's account.

`actor=None` is the system itself (a management command run by an operator, a scheduled task); it
may do anything and is recorded as "system" in the audit log.
"""

from __future__ import annotations

from clouddigit.errors import PermissionRefused


def _scope_objects(obj) -> list:
    """The objects a permission on `obj` may be held on: the project and its account, or the account."""
    account = getattr(obj, "account", None)
    return [obj, account] if account is not None else [obj]


def can(actor, perm: str, obj) -> bool:
    """`perm` is a bare codename from compute.permissions, e.g. "operate_vms"; `obj` a Project or Account."""
    if actor is None:
        return True
    if not actor.is_authenticated or not actor.is_active:
        return False
    if actor.is_superuser:
        return True
    return any(actor.has_perm(f"compute.{perm}", scope) for scope in _scope_objects(obj))


def require(actor, perm: str, obj, doing: str) -> None:
    if not can(actor, perm, obj):
        raise PermissionRefused(
            f"You may not {doing} in {obj}: it needs a role that grants '{perm}'. "
            "Ask an admin of the account for one."
        )
