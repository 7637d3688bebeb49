"""One scheduler tick over 10,000 VMs in scope: time and query count, next to 1,000 VMs in the same run.

The policy has a copy rule: copies are made when a snapshot has landed (a later tick), so they add a
few queries per policy and rule to a tick, none per VM.

The due tick claims a slot for every VM (all stopped, `when_stopped: skip`, so no snapshot is taken):
its queries grow only by batches of rows, never by one per VM; an idle tick's do not grow at all.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from clouddigit.compute.models import VM
from policies import engine
from policies.models import Policy, SlotRun
from policies.services import apply_policy

POLICY = """\
name: fleet
schedule:
  daily: 02:00 BDT
retention:
  daily: 7
scope:
  vm_tags: ['env=prod']
when_stopped: skip
copy_to:
  - region: bd-ctg-1
    retention: {daily: 7}
"""


def _fleet(template: VM, count: int, prefix: str) -> None:
    VM.objects.bulk_create(
        (
            VM(
                project=template.project,
                region=template.region,
                host=template.host,
                name=f"{prefix}-{i:05d}",
                flavor="std-2x4",
                vpc="fleet",
                tags={"env": "prod"},
            )
            for i in range(count)
        ),
        batch_size=2000,
    )


def _measure(now: datetime) -> tuple[float, int, int]:
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        runs = engine.tick(now)
        seconds = time.perf_counter() - started
    return seconds, len(queries), len(runs)


@pytest.mark.bench
def test_tick_over_10000_vms(make_vm, prod, ctg, settings, capsys):
    settings.POLICY_SPREAD_MINUTES = 10
    template = make_vm(prod, "template", tags={"env": "stage"})
    figures = {}
    for count in (1_000, 10_000):
        VM.objects.filter(name__startswith="fleet-").delete()
        SlotRun.objects.all().delete()
        Policy.objects.all().delete()
        _fleet(template, count, "fleet")
        policy = apply_policy(actor=None, project=prod, text=POLICY)
        Policy.objects.filter(pk=policy.pk).update(created_at=datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
        figures[f"idle_{count}"] = _measure(datetime(2026, 1, 5, 19, 0, tzinfo=UTC))  # no slot due
        figures[f"due_{count}"] = _measure(datetime(2026, 1, 5, 20, 11, tzinfo=UTC))  # every VM's start due
    with capsys.disabled():
        print()
        for key, (seconds, queries, runs) in figures.items():
            print(f"policy_tick_{key}_vms_ms={seconds * 1000:.0f}")
            print(f"policy_tick_{key}_vms_queries={queries}")
            print(f"policy_tick_{key}_vms_slots={runs}")
        print(f"policy_tick_due_ratio_10000_1000={figures['due_10000'][0] / figures['due_1000'][0]:.1f}")
        print(f"policy_tick_due_10000_queries_per_vm={figures['due_10000'][1] / 10_000:.4f}")
    assert figures["due_10000"][2] == 10_000
    assert figures["idle_10000"][1] == figures["idle_1000"][1]
    # Rows are written in batches (SQLite caps the parameters of one statement at 999), never one per VM.
    assert figures["due_10000"][1] < 10_000 / 50
