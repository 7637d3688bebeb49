"""The permissions a role binding grants. Each is defined on both Project and Account (the two places a
role can be bound), with the same codename; a grant on an account covers all its projects."""

from __future__ import annotations

PERMISSIONS = [
    ("view_inventory", "List VMs and volumes"),
    ("operate_vms", "Create VMs and volumes, attach volumes, start and stop VMs"),
    ("view_snapshots", "List snapshots and read their metadata"),
    ("create_snapshots", "Create, tag and copy snapshots"),
    ("restore_snapshots", "Restore snapshots to new volumes and VMs"),
    ("delete_snapshots", "Delete snapshots"),
    ("rollback_snapshots", "Roll volumes back to a snapshot"),
    ("manage_snapshot_quotas", "Raise snapshot limits"),
    ("manage_policies", "Create, change and delete snapshot policies"),
    ("view_images", "List images and read their metadata"),
    ("publish_images", "Upload, build and tag images"),
    ("share_images", "Share images across projects and mark them org-shared"),
    ("attest_images", "Sign images as CIS-hardened"),
    ("manage_image_quotas", "Raise custom-image limits and set the project's image policy"),
    ("view_audit", "Read the audit log and download reports"),
    ("manage_roles", "Grant and revoke roles"),
]
CODENAMES = [codename for codename, _ in PERMISSIONS]
