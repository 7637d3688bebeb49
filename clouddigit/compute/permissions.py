"""The permissions a role binding grants. Each is defined on both Project and Account (the two places a
role can be bound), with the same codename; a grant on an account covers all its projects.

Code names a permission only as a `Perm` member, never as a string: a misspelt member fails on import,
and `tests/test_access_rules.py` checks that no string spelling is left."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models

if TYPE_CHECKING:
    from django_stubs_ext import StrPromise


class Perm(models.TextChoices):
    VIEW_INVENTORY = "view_inventory", "List VMs and volumes"
    OPERATE_VMS = "operate_vms", "Create VMs and volumes, attach volumes, start and stop VMs"
    VIEW_SNAPSHOTS = "view_snapshots", "List snapshots and read their metadata"
    CREATE_SNAPSHOTS = "create_snapshots", "Create, tag and copy snapshots"
    RESTORE_SNAPSHOTS = "restore_snapshots", "Restore snapshots to new volumes and VMs"
    DELETE_SNAPSHOTS = "delete_snapshots", "Delete snapshots"
    ROLLBACK_SNAPSHOTS = "rollback_snapshots", "Roll volumes back to a snapshot"
    MANAGE_SNAPSHOT_QUOTAS = "manage_snapshot_quotas", "Raise snapshot limits"
    MANAGE_POLICIES = "manage_policies", "Create, change and delete snapshot policies"
    VIEW_IMAGES = "view_images", "List images and read their metadata"
    PUBLISH_IMAGES = "publish_images", "Upload, build and tag images"
    SHARE_IMAGES = "share_images", "Share images across projects and mark them org-shared"
    ATTEST_IMAGES = "attest_images", "Sign images as CIS-hardened"
    MANAGE_IMAGE_QUOTAS = (
        "manage_image_quotas",
        "Raise custom-image limits and set the project's image policy",
    )
    VIEW_AUDIT = "view_audit", "Read the audit log and download reports"
    MANAGE_ROLES = "manage_roles", "Grant and revoke roles"


# As Meta.permissions wants them: (codename, description).
PERMISSIONS: list[tuple[str, str | StrPromise]] = [(perm.value, str(perm.label)) for perm in Perm]
CODENAMES = Perm.values
