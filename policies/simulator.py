"""The prune simulator: what a policy would do, before it is saved or changed.

It runs the scheduler's own code (`engine.tick`: slots, spread, claims, skip/force, retention) on a
simulated clock, inside a transaction that is always rolled back, with effects that only write rows:
nothing is snapshotted, deleted or kept. It answers two questions:
- which of the policy's existing snapshots the (new) retention would keep and delete, and how many
  billed bytes deleting them frees;
- every snapshot it would create from `start` for `days`, and whether each is still kept at the end;
- with copy rules, every copy it would make in each rule's region and whether that rule's own retention
  still keeps it at the end (and which existing copies the rules would delete now).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from clouddigit.access import require
from clouddigit.compute.models import Project
from clouddigit.compute.permissions import Perm
from clouddigit.names import derived_name
from policies import engine
from policies.models import CopyRun, Policy, SlotRun
from policies.schedule import slots_between
from policies.services import check_copy_regions
from policies.spec import PolicyError, parse
from snapshots.models import Snapshot

MAX_DAYS = 366


class SimulatedEffects(engine.LiveEffects):
    """Rows instead of work: a snapshot is an available row stamped with its slot; deleting removes it."""

    def __init__(self):
        self.deleted: list[Snapshot] = []

    def take(self, policy, spec, run) -> Snapshot:
        return Snapshot.objects.create(
            project=policy.project,
            region_id=run.vm.region_id,
            name=derived_name(run.vm.name, f"-{run.klass}-{run.slot_at:%Y%m%d-%H%M}"),
            kind=Snapshot.Kind.VM,
            vm=run.vm,
            vm_name=run.vm.name,
            origin=Snapshot.Origin.POLICY,
            policy_name=policy.name,
            consistency_requested=Snapshot.Consistency.APPLICATION,
            state=Snapshot.State.AVAILABLE,
            created_by="simulator",
            created_at=run.slot_at,
        )

    def copy(self, snapshot: Snapshot, region: str) -> Snapshot:
        return Snapshot.objects.create(
            project=snapshot.project,
            region_id=region,
            name=snapshot.name,
            kind=snapshot.kind,
            vm_name=snapshot.vm_name,
            consistency_requested=snapshot.consistency_requested,
            source_snapshot=snapshot,
            source_region_id=snapshot.region_id,
            state=Snapshot.State.AVAILABLE,
            created_by="simulator",
            created_at=snapshot.created_at,
        )

    def delete(self, snapshot: Snapshot) -> None:
        self.deleted.append(snapshot)
        Snapshot.objects.filter(pk=snapshot.pk).delete()


class _Rollback(Exception):
    pass


@dataclass
class Outcome:
    existing_kept: list[dict]
    existing_deleted: list[dict]
    freed_bytes: int
    created: list[dict]
    copies: list[dict]


def _row(snapshot: Snapshot) -> dict:
    return {
        "id": str(snapshot.pk),
        "name": snapshot.name,
        "vm": snapshot.vm_name,
        "region": snapshot.region_id,
        "created_at": snapshot.created_at.isoformat(),
        "billed_bytes": snapshot.billed_bytes,
    }


def simulate(*, actor, project: Project, text: str, start: datetime | None = None, days: int = 0) -> Outcome:
    require(actor, Perm.VIEW_SNAPSHOTS, project, "simulate snapshot policies")
    spec = parse(text)
    check_copy_regions(project, spec)
    if not 0 <= days <= MAX_DAYS:
        raise PolicyError(f"Simulate between 0 and {MAX_DAYS} days.", field="days")
    start = start or timezone.now()
    result = {}
    try:
        with transaction.atomic():
            result = _run(project, spec, text, start, days)
            raise _Rollback
    except _Rollback:
        pass
    return Outcome(**result)


def _run(project: Project, spec, text: str, start: datetime, days: int) -> dict:
    policy, _ = Policy.objects.update_or_create(
        project=project,
        name=spec.name,
        defaults={"spec": Policy.spec_to_json(spec), "source": text, "applied_by": "simulator"},
    )
    existing = list(Snapshot.objects.filter(project=project, policy_name=spec.name))
    existing += list(
        Snapshot.objects.filter(pk__in=CopyRun.objects.filter(run__policy=policy).values("copy_id"))
    )
    effects = SimulatedEffects()
    engine.apply_retention(policy, effects)
    engine.apply_copy_retention(policy, effects)
    deleted_ids = {snapshot.pk for snapshot in effects.deleted}
    answer = {
        "existing_kept": [_row(s) for s in existing if s.pk not in deleted_ids],
        "existing_deleted": [_row(s) for s in effects.deleted],
        "freed_bytes": sum(snapshot.billed_bytes for snapshot in effects.deleted),
        "created": [],
        "copies": [],
    }
    if days:
        Policy.objects.filter(pk=policy.pk).update(created_at=start, scanned_until=start)
        window = timedelta(minutes=settings.POLICY_SPREAD_MINUTES)
        end = start + timedelta(days=days)
        for slot_at in sorted({at for at, _ in slots_between(spec, start, end)}):
            # Every start of the slot is due by then. The policy is re-read: each tick moves scanned_until.
            engine.tick(slot_at + window, effects, policies=Policy.objects.filter(pk=policy.pk))
        runs = (
            SlotRun.objects.filter(policy=policy, slot_at__gt=start)
            .select_related("vm")
            .order_by("slot_at", "vm__name")
        )
        answer["created"] = [
            {
                "vm": run.vm.name,
                "slot": run.slot_at.isoformat(),
                "class": run.klass,
                "outcome": run.outcome,
                "reason": run.reason,
                "kept": run.outcome == SlotRun.Outcome.CREATED and not run.retired,
            }
            for run in runs
        ]
        copies = (
            CopyRun.objects.filter(run__policy=policy, run__slot_at__gt=start)
            .select_related("run__vm")
            .order_by("run__slot_at", "run__vm__name", "region_id")
        )
        answer["copies"] = [
            {
                "vm": row.run.vm.name,
                "slot": row.run.slot_at.isoformat(),
                "class": row.run.klass,
                "region": row.region_id,
                "reason": row.reason,
                "kept": row.copy_id is not None and not row.retired,
            }
            for row in copies
        ]
    return answer
