"""Is the policy firing? For every VM in scope: its last snapshot from the policy, and when a VM has none
from the last 24 hours, why (the spec's causes: stopped, detaching, throttled, failed; or no run at all)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from clouddigit.compute.models import VM
from policies.engine import in_scope
from policies.models import Policy, SlotRun

WINDOW = timedelta(hours=24)


@dataclass
class Row:
    vm: VM
    last_run: SlotRun | None
    last_created: SlotRun | None
    covered: bool
    reason: str


def coverage(policy: Policy, now: datetime) -> list[Row]:
    vms = list(in_scope(policy).order_by("name"))
    runs = SlotRun.objects.filter(policy=policy, vm__in=vms).select_related("snapshot").order_by("-slot_at")
    last_run: dict = {}
    last_created: dict = {}
    for run in runs.filter(slot_at__gte=now - WINDOW):
        last_run.setdefault(run.vm_id, run)
    for run in runs.filter(outcome=SlotRun.Outcome.CREATED):
        last_created.setdefault(run.vm_id, run)
    rows = []
    for vm in vms:
        created = last_created.get(vm.pk)
        covered = created is not None and created.slot_at >= now - WINDOW
        latest = last_run.get(vm.pk)
        if covered:
            reason = ""
        elif latest is None and policy.created_at > now - WINDOW:
            reason = "no slot has come due since the policy was applied"
        elif latest is None:
            reason = (
                "no slot of this policy ran for it in the last 24 hours: is the scheduler (beat) running?"
            )
        else:
            reason = (
                f"{latest.get_outcome_display().lower()}: {latest.reason}"
                if latest.reason
                else latest.outcome
            )
        rows.append(Row(vm, latest, created, covered, reason))
    return rows
