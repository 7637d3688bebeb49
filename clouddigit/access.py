"""The one permission policy: a permission held on a project, or on the project's account.

`actor=None` is the system itself (a management command run by an operator, a scheduled task); it
may do anything and is recorded as "system" in the audit log.

Reads use the same policy: `Project.objects.visible_to(user, perm)` (and every project-scoped model's
`visible_to`, built on it by `ProjectScopedQuerySet`), `Account.objects.visible_to(user, perm)`, and
`project_by_reference` for a project the user names.
"""

from __future__ import annotations

from clouddigit.compute.models import Project
from clouddigit.compute.permissions import Perm
from clouddigit.errors import InvalidRequest, PermissionRefused

SYSTEM = "system"


def _scope_objects(obj) -> list:
    """The objects a permission on `obj` may be held on: the project and its account, or the account."""
    account = getattr(obj, "account", None)
    return [obj, account] if account is not None else [obj]


def can(actor, perm: Perm, obj) -> bool:
    """Whether `actor` holds `perm` on `obj` (a Project or Account) or on the project's account."""
    codename = Perm(perm)  # an unknown name is a bug, not a refusal
    if actor is None:
        return True
    if not actor.is_authenticated or not actor.is_active:
        return False
    if actor.is_superuser:
        return True
    return any(actor.has_perm(f"compute.{codename.value}", scope) for scope in _scope_objects(obj))


def require(actor, perm: Perm, obj, doing: str) -> None:
    if not can(actor, perm, obj):
        raise PermissionRefused(
            f"You may not {doing} in {obj}: it needs a role that grants '{Perm(perm).value}'. "
            "Ask an admin of the account for one."
        )


def project_by_reference(user, reference: str, perm: Perm = Perm.VIEW_INVENTORY, *, field: str = "project"):
    """The project `reference` (its id or `account/project`) names among those where `user` holds `perm`;
    one the user may not see is answered like one that does not exist."""
    project = Project.objects.visible_to(user, perm).by_reference(reference).select_related("account").first()
    if project is None:
        raise InvalidRequest(f"There is no project {reference!r} that you can see.", field=field)
    return project


def actor_name(actor) -> str:
    """How records name who acted: the username, "system" for the system itself, else "anonymous"."""
    if actor is None:
        return SYSTEM
    return actor.get_username() if actor.is_authenticated else "anonymous"
