"""Applying, exporting and deleting snapshot policies (the scheduler that runs them comes next)."""

from __future__ import annotations

from clouddigit.access import require
from clouddigit.audit.log import audited
from clouddigit.compute.models import Project
from policies import spec as policy_spec
from policies.models import Policy

MAX_YAML_BYTES = 64 * 1024


@audited("policy.apply")
def apply_policy(*, actor, project: Project, text: str) -> Policy:
    """Create the policy named in the YAML, or replace it: nothing is saved unless all of it is valid."""
    require(actor, "manage_policies", project, "apply snapshot policies")
    if len(text.encode()) > MAX_YAML_BYTES:
        raise policy_spec.PolicyError(
            f"The policy is larger than {MAX_YAML_BYTES // 1024} KiB.", field="yaml"
        )
    parsed = policy_spec.parse(text)
    policy, _ = Policy.objects.update_or_create(
        project=project,
        name=parsed.name,
        defaults={
            "spec": Policy.spec_to_json(parsed),
            "source": text,
            "applied_by": actor.get_username() if actor else "system",
        },
    )
    return policy


def export_policy(policy: Policy) -> str:
    return policy.parsed.to_yaml()
