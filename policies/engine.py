"""The scheduler: one tick a minute (Celery beat), and retention after it.

A tick claims every due (policy, VM, slot) by inserting a SlotRun row tagged with its own claim token;
the database's unique constraint lets exactly one tick win each slot, so two beats, two workers, a
retried task or a restart never snapshot a slot twice. Only the rows carrying this tick's token are run.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from clouddigit.compute.models import VM, Volume
from clouddigit.errors import BackendUnavailable, ServiceError
from clouddigit.names import derived_name
from policies import notifications
from policies.models import CopyRun, Policy, SlotRun
from policies.schedule import slots_between, spread
from snapshots import replication
from snapshots import services as snapshots
from snapshots.models import Snapshot


def tagged(project_id, vm_tags):
    """A project's VMs carrying every one of `vm_tags`: a policy's scope is by tag, never by name."""
    vms = VM.objects.filter(project=project_id)
    for key, value in vm_tags:
        vms = vms.with_tag(key, value)
    return vms


def in_scope(policy: Policy):
    return tagged(policy.project_id, policy.parsed.vm_tags)


# A throttled run is retried on later ticks until this long after its spread window.
RETRY_GRACE = timedelta(minutes=1)


class LiveEffects:
    """What the scheduler does to the world: take a snapshot, delete one. The prune simulator swaps in
    effects that only write rows, and runs everything else (slots, claims, skips, retention) as is."""

    def take(self, policy: Policy, spec, run: SlotRun) -> Snapshot:
        return snapshots.create_snapshot(
            actor=None,
            vm=run.vm,
            name=derived_name(run.vm.name, f"-{run.klass}-{run.slot_at:%Y%m%d-%H%M}"),
            consistency=Snapshot.Consistency.APPLICATION
            if spec.application_consistent
            else Snapshot.Consistency.CRASH,
            origin=Snapshot.Origin.POLICY,
            policy_name=policy.name,
            tags={"policy-class": run.klass},
        )

    def delete(self, snapshot: Snapshot) -> None:
        snapshots.delete_snapshot(actor=None, snapshot=snapshot, confirm=snapshot.name)

    def copy(self, snapshot: Snapshot, region: str) -> Snapshot:
        return replication.copy_snapshot(actor=None, snapshot=snapshot, target_region=region)


LIVE = LiveEffects()


def tick(now: datetime, effects: LiveEffects = LIVE, policies=None) -> list[SlotRun]:
    """Run every slot that is due at `now` and not run yet; record slots too old to catch up as missed.
    `policies`: only these (the simulator); default every policy."""
    window = timedelta(minutes=settings.POLICY_SPREAD_MINUTES)
    catch_up = timedelta(hours=settings.POLICY_CATCH_UP_HOURS)
    ran = []
    for policy in policies if policies is not None else Policy.objects.select_related("project"):
        spec = policy.parsed
        vms = list(in_scope(policy).only("id"))
        claim = uuid.uuid4()
        candidates = []
        # From where the last tick got to (after downtime: the whole gap, so that old slots are recorded
        # as missed), less the spread window, whose late starts may not have been due then.
        since = (policy.scanned_until or policy.created_at) - window
        for slot_at, klass in [] if policy.retention_only else slots_between(spec, since, now):
            for vm in vms:
                if slot_at + spread(policy.pk, vm.pk, window) <= now:
                    candidates.append(
                        SlotRun(policy=policy, vm=vm, slot_at=slot_at, klass=klass, claim=claim)
                    )
        SlotRun.objects.bulk_create(candidates, ignore_conflicts=True, batch_size=2000)
        # Runs the backend throttled earlier in their window are claimed again (once per tick).
        SlotRun.objects.filter(
            policy=policy, outcome=SlotRun.Outcome.THROTTLED, slot_at__gte=now - window - RETRY_GRACE
        ).update(claim=claim)
        claimed = list(SlotRun.objects.filter(policy=policy, claim=claim).select_related("vm__host"))
        ran += _run_all(policy, spec, claimed, now, catch_up, effects)
        if effects is LIVE:
            notifications.notify_runs(policy, claimed, now)
        Policy.objects.filter(pk=policy.pk).filter(
            Q(scanned_until__isnull=True) | Q(scanned_until__lt=now)
        ).update(scanned_until=now)
        schedule_copies(policy, effects)
        apply_retention(policy, effects)
        apply_copy_retention(policy, effects)
    return ran


def _run_all(
    policy: Policy, spec, runs: list[SlotRun], now: datetime, catch_up: timedelta, effects: LiveEffects
) -> list[SlotRun]:
    """Decide every claimed run; the ones that are not skipped or missed create a snapshot each. Outcomes
    are written in one statement, so the queries grow with the snapshots taken, not with the VMs seen."""
    detaching: dict = {}
    for vm_id, name in Volume.objects.filter(
        vm__in={run.vm_id for run in runs}, state=Volume.State.DETACHING
    ).values_list("vm_id", "name"):
        detaching.setdefault(vm_id, []).append(name)
    for run in runs:
        vm = run.vm
        if now - run.slot_at > catch_up:
            _decide(
                run, SlotRun.Outcome.MISSED, f"the scheduler was down; past the {catch_up} catch-up window"
            )
        elif vm.state != VM.State.RUNNING and spec.when_stopped == "skip":
            _decide(
                run, SlotRun.Outcome.SKIPPED, f"VM was {vm.state} at the scheduled time (when_stopped: skip)"
            )
        elif run.vm_id in detaching:
            _decide(run, SlotRun.Outcome.SKIPPED, f"volume {', '.join(detaching[run.vm_id])} was detaching")
        else:
            try:
                _decide(run, SlotRun.Outcome.CREATED, snapshot=effects.take(policy, spec, run))
            except BackendUnavailable as error:
                _decide(
                    run,
                    SlotRun.Outcome.THROTTLED,
                    f"the snapshot backend throttled ({error.message}); "
                    "retried on the next ticks within the spread window",
                )
            except ServiceError as error:
                _decide(run, SlotRun.Outcome.FAILED, error.message)
    _write_outcomes(runs)
    return runs


def _write_outcomes(runs: list[SlotRun], batch: int = 2000) -> None:
    """One UPDATE per distinct (outcome, reason, snapshot) and batch of rows: a tick that skips 10,000
    stopped VMs for the same reason writes them in a few statements (`bulk_update`'s CASE per row and
    field cost seconds there)."""
    groups: dict[tuple, list] = {}
    for run in runs:
        groups.setdefault((run.outcome, run.reason, run.snapshot_id), []).append(run.pk)
    now = timezone.now()
    for (outcome, reason, snapshot_id), ids in groups.items():
        for first in range(0, len(ids), batch):
            SlotRun.objects.filter(pk__in=ids[first : first + batch]).update(
                outcome=outcome, reason=reason, snapshot_id=snapshot_id, updated_at=now
            )


def _decide(run: SlotRun, outcome: str, reason: str = "", snapshot: Snapshot | None = None) -> None:
    run.outcome, run.reason, run.snapshot, run.updated_at = outcome, reason[:300], snapshot, timezone.now()


def schedule_copies(policy: Policy, effects: LiveEffects = LIVE) -> list[CopyRun]:
    """Copy each of the policy's snapshots that has become available into every copy rule's region, once.

    Copies are made when their source has landed (the tick after), not when the slot is claimed: the
    due tick itself gains no query per VM. A few queries per policy and rule find what is due; each copy
    is one `copy_snapshot` (its row and its task on the replication queue), so the work grows with the
    snapshots that landed, never with the VMs in scope."""
    made: list[CopyRun] = []
    for rule in policy.parsed.copy_to:
        due = (
            SlotRun.objects.filter(
                policy=policy,
                outcome=SlotRun.Outcome.CREATED,
                retired=False,
                snapshot__state=Snapshot.State.AVAILABLE,
            )
            .exclude(copy_runs__region_id=rule.region)
            .select_related("snapshot__project")
        )
        rows = []
        for run in due:
            snapshot = run.snapshot
            assert snapshot is not None  # `due` holds runs with an available snapshot
            row = CopyRun(run=run, region_id=rule.region)
            if snapshot.region_id == rule.region:
                row.reason = f"the snapshot is in {rule.region} already"
            else:
                try:
                    row.copy = effects.copy(snapshot, rule.region)
                except ServiceError as error:
                    row.reason = error.message[:300]
            rows.append(row)
        made += CopyRun.objects.bulk_create(rows, ignore_conflicts=True, batch_size=2000)
    return made


def _prune(policy: Policy, entries, keep: dict[str, int], effects: LiveEffects, retire) -> list:
    """Per VM and class keep the newest `keep[class]` snapshots of `entries` ((vm id, class, snapshot,
    row), newest first per VM and class); delete the others through the same delete service as a user
    (layers merge safely) and `retire(row)` each. A held snapshot, or one being restored, stays."""
    retired = []
    seen: dict[tuple, int] = {}
    for vm_id, klass, snapshot, row in entries:
        key = (vm_id, klass)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= keep[klass] or snapshot.hold:
            continue
        try:
            effects.delete(snapshot)
        except ServiceError as error:
            if effects is LIVE:
                notifications.notify_retention_error(
                    policy, _slot_of(row), f"could not delete {snapshot.name}: {error.message}"
                )
            continue  # in use by a restore: retention tries again next tick
        retire(row)
        retired.append(row)
    return retired


def _slot_of(row) -> datetime:
    return row.slot_at if isinstance(row, SlotRun) else row.run.slot_at


def apply_retention(policy: Policy, effects: LiveEffects = LIVE) -> list[SlotRun]:
    """The policy's retention over the snapshots it created (per VM and class, the newest N)."""
    spec = policy.parsed
    live = SlotRun.objects.filter(
        policy=policy, outcome=SlotRun.Outcome.CREATED, retired=False, snapshot__isnull=False
    ).select_related("snapshot__project__account")
    entries = (
        (run.vm_id, run.klass, run.snapshot, run) for run in live.order_by("vm_id", "klass", "-slot_at")
    )
    return _prune(
        policy,
        entries,
        {"daily": spec.keep_daily, "weekly": spec.keep_weekly},
        effects,
        lambda run: SlotRun.objects.filter(pk=run.pk).update(retired=True),
    )


def apply_copy_retention(policy: Policy, effects: LiveEffects = LIVE) -> list[CopyRun]:
    """Each copy rule's own retention over the copies it made in its region, pruned like the source."""
    retired: list[CopyRun] = []
    for rule in policy.parsed.copy_to:
        live = CopyRun.objects.filter(
            run__policy=policy, region_id=rule.region, retired=False, copy__isnull=False
        ).select_related("run", "copy__project__account")
        entries = (
            (row.run.vm_id, row.run.klass, row.copy, row)
            for row in live.order_by("run__vm_id", "run__klass", "-run__slot_at")
        )
        retired += _prune(
            policy,
            entries,
            {"daily": rule.keep_daily, "weekly": rule.keep_weekly},
            effects,
            lambda row: CopyRun.objects.filter(pk=row.pk).update(retired=True),
        )
    return retired
