"""The roles a binding can grant, and the permissions each one carries.

Image roles are the spec's "Custom image IAM" table; snapshot roles, auditor and account admin complete
them. Every role includes `view_inventory`: you cannot act on a VM you cannot see.
"""

from __future__ import annotations

from dataclasses import dataclass

from clouddigit.compute.permissions import CODENAMES, Perm


@dataclass(frozen=True)
class Role:
    name: str
    summary: str
    permissions: frozenset[str]
    account_only: bool = False


def _role(name: str, summary: str, *permissions: str, account_only: bool = False) -> Role:
    unknown = set(permissions) - set(CODENAMES)
    assert not unknown, f"role {name} names unknown permissions {unknown}"
    return Role(name, summary, frozenset(permissions), account_only)


IMAGE_VIEWER = (Perm.VIEW_INVENTORY, Perm.VIEW_IMAGES)
IMAGE_PUBLISHER = (*IMAGE_VIEWER, Perm.PUBLISH_IMAGES)
SNAPSHOT_VIEWER = (Perm.VIEW_INVENTORY, Perm.VIEW_SNAPSHOTS)
SNAPSHOT_OPERATOR = (*SNAPSHOT_VIEWER, Perm.CREATE_SNAPSHOTS, Perm.RESTORE_SNAPSHOTS, Perm.DELETE_SNAPSHOTS)

ROLES = {
    role.name: role
    for role in [
        _role("image.viewer", "List images, read metadata", *IMAGE_VIEWER),
        _role("image.publisher", "Upload / build / tag images in the project", *IMAGE_PUBLISHER),
        _role(
            "image.admin",
            "All publisher + share across projects, mark org-shared",
            *IMAGE_PUBLISHER,
            Perm.SHARE_IMAGES,
        ),
        _role(
            "image.cis-attestor",
            "Sign images as CIS-hardened (audit-trail role)",
            *IMAGE_VIEWER,
            Perm.ATTEST_IMAGES,
        ),
        _role("snapshot.viewer", "List snapshots, read metadata", *SNAPSHOT_VIEWER),
        _role("snapshot.operator", "Create, restore to new and delete snapshots", *SNAPSHOT_OPERATOR),
        _role(
            "snapshot.admin",
            "All operator + roll back, snapshot quotas and policies",
            *SNAPSHOT_OPERATOR,
            Perm.ROLLBACK_SNAPSHOTS,
            Perm.MANAGE_SNAPSHOT_QUOTAS,
            Perm.MANAGE_POLICIES,
        ),
        _role(
            "auditor",
            "Read-only everywhere in the account; audit log and reports",
            Perm.VIEW_INVENTORY,
            Perm.VIEW_IMAGES,
            Perm.VIEW_SNAPSHOTS,
            Perm.VIEW_AUDIT,
            account_only=True,
        ),
        _role(
            "account.admin",
            "Everything in the account; grants and revokes roles",
            *CODENAMES,
            account_only=True,
        ),
    ]
}
ROLE_CHOICES = [(name, name) for name in ROLES]


def permissions_of(role_names) -> set[str]:
    return set().union(*(ROLES[name].permissions for name in role_names)) if role_names else set()
