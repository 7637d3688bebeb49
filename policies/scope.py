"""Which of a VM's tags would put it under a snapshot policy: a restored VM keeps none of them unless the
user says so, so that a sandbox restore of a prod VM does not silently fall under the prod policy."""

from __future__ import annotations

from clouddigit.compute.models import Project
from policies.models import Policy


def policy_scope_tags(project: Project, tags: dict) -> dict[str, str]:
    """{key: why} for each tag in `tags` that completes the scope of a policy of `project` which takes
    snapshots (a VM with these tags would be covered by it). Policies that only apply retention take no
    new snapshots, and a policy whose scope these tags do not match is not reached by keeping them."""
    policies: dict[str, list[str]] = {}
    for policy in Policy.objects.filter(project=project, retention_only=False).order_by("name"):
        scope = policy.parsed.vm_tags
        if scope and all(tags.get(key) == value for key, value in scope):
            for key, _ in scope:
                policies.setdefault(key, []).append(policy.name)
    return {key: f"it would put this VM under policy {', '.join(names)}" for key, names in policies.items()}
