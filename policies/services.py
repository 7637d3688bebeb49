"""Applying, exporting and deleting snapshot policies (the scheduler that runs them comes next)."""

from __future__ import annotations

from clouddigit.access import actor_name, require
from clouddigit.audit.log import audited
from clouddigit.compute.models import Project, Region
from clouddigit.compute.permissions import Perm
from clouddigit.errors import InvalidRequest
from policies import engine
from policies import spec as policy_spec
from policies.models import Policy
from snapshots.models import Snapshot
from snapshots.services import delete_snapshot

MAX_YAML_BYTES = 64 * 1024


@audited("policy.apply")
def apply_policy(*, actor, project: Project, text: str) -> Policy:
    """Create the policy named in the YAML, or replace it: nothing is saved unless all of it is valid."""
    require(actor, Perm.MANAGE_POLICIES, project, "apply snapshot policies")
    if len(text.encode()) > MAX_YAML_BYTES:
        raise policy_spec.PolicyError(
            f"The policy is larger than {MAX_YAML_BYTES // 1024} KiB.", field="yaml"
        )
    parsed = policy_spec.parse(text)
    check_copy_regions(project, parsed)
    policy, _ = Policy.objects.update_or_create(
        project=project,
        name=parsed.name,
        defaults={
            "spec": Policy.spec_to_json(parsed),
            "source": text,
            "applied_by": actor_name(actor),
        },
    )
    return policy


def check_copy_regions(project: Project, parsed: policy_spec.PolicySpec) -> None:
    """Every copy rule names a known region other than the regions of the VMs the policy snapshots now."""
    if not parsed.copy_to:
        return
    known = set(Region.objects.values_list("slug", flat=True))
    in_scope = set(engine.tagged(project.pk, parsed.vm_tags).values_list("region_id", flat=True).distinct())
    for index, rule in enumerate(parsed.copy_to):
        where = f"copy_to[{index}].region"
        if rule.region not in known:
            raise policy_spec.PolicyError(
                f"{where}: unknown region {rule.region!r}; the regions are {', '.join(sorted(known))}.",
                field=where,
            )
        if rule.region in in_scope:
            raise policy_spec.PolicyError(
                f"{where}: the policy's VMs are in {rule.region}, so its snapshots are there already; "
                "copy them to another region.",
                field=where,
            )


def export_policy(policy: Policy) -> str:
    return policy.parsed.to_yaml()


SNAPSHOT_CHOICES = {
    "keep": "keep its snapshots (they become manual snapshots: nothing deletes them automatically)",
    "retain": "keep applying its retention to its snapshots, but take no new ones",
    "delete": "delete its snapshots (their data merges away like any delete)",
}


@audited("policy.delete", target="policy")
def delete_policy(*, actor, policy: Policy, snapshots: str, confirm: str = "") -> None:
    """Deleting a policy says what becomes of its snapshots: `keep`, `retain` or `delete`. Deleting
    them destroys data: `confirm` is then the policy's name, typed by the user."""
    require(actor, Perm.MANAGE_POLICIES, policy.project, "delete snapshot policies")
    if snapshots not in SNAPSHOT_CHOICES:
        choices = "; ".join(f"{key}: {text}" for key, text in SNAPSHOT_CHOICES.items())
        raise InvalidRequest(f"Say what becomes of the policy's snapshots: {choices}.", field="snapshots")
    if snapshots == "delete" and confirm != policy.name:
        raise InvalidRequest(
            f"Deleting the policy with its snapshots destroys every point in time it took. "
            f"Type {policy.name!r} to confirm.",
            field="confirm",
        )
    owned = Snapshot.objects.filter(
        project=policy.project, policy_name=policy.name, origin=Snapshot.Origin.POLICY
    )
    if snapshots == "retain":
        Policy.objects.filter(pk=policy.pk).update(retention_only=True)
        return
    if snapshots == "keep":
        owned.update(origin=Snapshot.Origin.MANUAL)
    else:
        for snapshot in owned.exclude(state=Snapshot.State.DELETING):
            delete_snapshot(actor=actor, snapshot=snapshot, confirm=snapshot.name)
    policy.delete()
