"""Copy rules in a policy (`copy_to`): parsed and exported, checked against the regions, run by the
scheduler (every snapshot the policy takes is copied once it is available; the target region keeps its
copies by the rule's own retention) and previewed by the simulator."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from clouddigit.access import actor_name
from policies import engine
from policies.models import CopyRun, Policy, SlotRun
from policies.services import apply_policy, export_policy
from policies.simulator import simulate
from policies.spec import CopyRule, PolicyError, parse
from snapshots.models import Snapshot
from tests.policies.test_scheduler import POLICY, _running

COPIED = (
    POLICY.format(when_stopped="skip")
    + "copy_to:\n  - region: bd-ctg-1\n    retention: {daily: 3, weekly: 2}\n"
)


def test_copy_rules_parse_and_export_back():
    spec = parse(COPIED)
    assert spec.copy_to == (CopyRule("bd-ctg-1", 3, 2),)
    exported = spec.to_yaml()
    assert parse(exported) == spec and parse(exported).to_yaml() == exported
    assert "copy_to" not in parse(POLICY.format(when_stopped="skip")).to_yaml()  # unchanged without rules


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("copy_to: bd-ctg-1\n", "copy_to: must be a list of copy rules"),
        ("copy_to:\n  - region: bd-ctg-1\n", r"copy_to\[0\].retention: is required"),
        ("copy_to:\n  - {region: bd-ctg-1, retention: {daily: x, weekly: 1}}\n", "must be a whole number"),
        ("copy_to:\n  - {region: bd-ctg-1, retention: {hourly: 1}}\n", "unknown field"),
        (
            "copy_to:\n  - {region: bd-ctg-1, retention: {daily: 7}}\n",
            r"copy_to\[0\].retention.weekly: a weekly schedule needs a weekly retention of 1 or more for its "
            "copies in bd-ctg-1",
        ),
        (
            "copy_to:\n  - {region: bd-ctg-1, retention: {daily: 1, weekly: 1}}\n"
            "  - {region: bd-ctg-1, retention: {daily: 1, weekly: 1}}\n",
            "has a copy rule already",
        ),
    ],
)
def test_bad_copy_rules_are_named_with_their_line(tail, message):
    with pytest.raises(PolicyError, match=message):
        parse(POLICY.format(when_stopped="skip") + tail)


def test_apply_refuses_an_unknown_region_and_the_policys_own_region(make_vm, prod):
    make_vm(prod, "db-01", tags={"env": "prod"})  # in bd-dha-1
    with pytest.raises(PolicyError, match="unknown region 'bd-xyz-9'; the regions are bd-ctg-1, bd-dha-1"):
        apply_policy(actor=None, project=prod, text=COPIED.replace("bd-ctg-1", "bd-xyz-9"))
    with pytest.raises(PolicyError, match="the policy's VMs are in bd-dha-1"):
        apply_policy(actor=None, project=prod, text=COPIED.replace("bd-ctg-1", "bd-dha-1"))
    assert not Policy.objects.exists()


def test_export_and_apply_round_trip(make_vm, prod):
    make_vm(prod, "db-01", tags={"env": "prod"})
    policy = apply_policy(actor=None, project=prod, text=COPIED)
    exported = export_policy(policy)
    again = apply_policy(actor=None, project=prod, text=exported)
    assert again.pk == policy.pk and again.parsed == parse(COPIED) and export_policy(again) == exported


def test_the_tick_copies_each_available_policy_snapshot_once(
    make_vm, prod, ctg, settings, django_capture_on_commit_callbacks
):
    settings.POLICY_SPREAD_MINUTES = 0
    _running(make_vm, prod, "db-01", {"env": "prod"})
    policy = apply_policy(actor=None, project=prod, text=COPIED)
    Policy.objects.filter(pk=policy.pk).update(created_at=datetime(2026, 1, 1, tzinfo=UTC))
    with django_capture_on_commit_callbacks(execute=True):
        engine.tick(datetime(2026, 1, 1, 21, 30, tzinfo=UTC))  # takes the daily snapshot
    source = SlotRun.objects.get().snapshot
    assert source is not None and source.state == Snapshot.State.AVAILABLE
    # The copy's sending is queued on the replication queue (not run here: no object store in this test).
    engine.tick(datetime(2026, 1, 1, 21, 31, tzinfo=UTC))
    row = CopyRun.objects.get()
    assert row.copy is not None and row.copy.source_snapshot == source and row.copy.region_id == "bd-ctg-1"
    assert row.copy.created_by == actor_name(None)  # the scheduler, no user
    engine.tick(datetime(2026, 1, 1, 21, 32, tzinfo=UTC))
    assert CopyRun.objects.count() == 1 and Snapshot.objects.filter(region="bd-ctg-1").count() == 1


def test_simulate_shows_copies_and_their_own_pruning(make_vm, prod, ctg, settings):
    settings.POLICY_SPREAD_MINUTES = 10
    _running(make_vm, prod, "db-01", {"env": "prod"})
    outcome = simulate(actor=None, project=prod, text=COPIED, start=datetime(2026, 1, 1, tzinfo=UTC), days=30)
    copies = outcome.copies
    assert {row["region"] for row in copies} == {"bd-ctg-1"}
    assert len([r for r in copies if r["class"] == "daily"]) == 30
    kept = [r for r in copies if r["kept"]]
    assert len([r for r in kept if r["class"] == "daily"]) == 3  # the rule's retention, not the source's 7
    assert len([r for r in kept if r["class"] == "weekly"]) == 2
    assert len([r for r in outcome.created if r["kept"] and r["class"] == "daily"]) == 7
    assert not Snapshot.objects.exists() and not CopyRun.objects.exists()
