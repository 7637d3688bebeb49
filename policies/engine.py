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
from policies.models import Policy, SlotRun
from policies.schedule import slots_between, spread
from snapshots import services as snapshots
from snapshots.models import Snapshot


def in_scope(policy: Policy):
    """The policy's VMs: by tag, never by name (every listed tag must match)."""
    vms = VM.objects.filter(project=policy.project_id)
    for key, value in policy.parsed.vm_tags:
        vms = vms.with_tag(key, value)
    return vms


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
        apply_retention(policy, effects)
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
    SlotRun.objects.bulk_update(runs, ["outcome", "reason", "snapshot", "updated_at"], batch_size=2000)
    return runs


def _decide(run: SlotRun, outcome: str, reason: str = "", snapshot: Snapshot | None = None) -> None:
    run.outcome, run.reason, run.snapshot, run.updated_at = outcome, reason[:300], snapshot, timezone.now()


def apply_retention(policy: Policy, effects: LiveEffects = LIVE) -> list[SlotRun]:
    """Per VM and class keep the newest N snapshots the policy created; delete the others through the
    same delete service as a user (layers merge safely). A held snapshot, or one being restored, stays."""
    spec = policy.parsed
    keep = {"daily": spec.keep_daily, "weekly": spec.keep_weekly}
    retired = []
    live = SlotRun.objects.filter(
        policy=policy, outcome=SlotRun.Outcome.CREATED, retired=False, snapshot__isnull=False
    ).select_related("snapshot__project__account")
    seen: dict[tuple, int] = {}
    for run in live.order_by("vm_id", "klass", "-slot_at"):
        key = (run.vm_id, run.klass)
        seen[key] = seen.get(key, 0) + 1
        snapshot = run.snapshot
        assert snapshot is not None  # `live` holds runs with a snapshot
        if seen[key] <= keep[run.klass] or snapshot.hold:
            continue
        try:
            effects.delete(snapshot)
        except ServiceError as error:
            if effects is LIVE:
                notifications.notify_retention_error(
                    policy, run.slot_at, f"could not delete {snapshot.name}: {error.message}"
                )
            continue  # in use by a restore: retention tries again next tick
        SlotRun.objects.filter(pk=run.pk).update(retired=True)
        retired.append(run)
    return retired
