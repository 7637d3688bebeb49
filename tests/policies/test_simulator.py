from __future__ import annotations

from datetime import UTC, datetime

from policies.models import Policy, SlotRun
from policies.simulator import simulate
from snapshots.models import Snapshot
from tests.policies.test_scheduler import POLICY, _running


def test_sixty_simulated_days_keep_seven_daily_and_four_weekly_and_touch_nothing(make_vm, prod, settings):
    settings.POLICY_SPREAD_MINUTES = 10
    _running(make_vm, prod, "db-01", {"env": "prod"})
    make_vm(prod, "web-01", tags={"env": "prod"})  # stopped: skipped under when_stopped: skip
    outcome = simulate(
        actor=None,
        project=prod,
        text=POLICY.format(when_stopped="skip"),
        start=datetime(2026, 1, 1, tzinfo=UTC),
        days=60,
    )
    db01 = [row for row in outcome.created if row["vm"] == "db-01"]
    assert len([r for r in db01 if r["class"] == "daily"]) == 60
    kept = [r for r in db01 if r["kept"]]
    assert (
        len([r for r in kept if r["class"] == "daily"]) == 7
        and len([r for r in kept if r["class"] == "weekly"]) == 4
    )
    assert {r["outcome"] for r in outcome.created if r["vm"] == "web-01"} == {"skipped"}
    # The simulation ran in a transaction that was rolled back: nothing of it is left.
    assert not Policy.objects.exists() and not SlotRun.objects.exists() and not Snapshot.objects.exists()


def test_a_stricter_retention_previews_which_existing_snapshots_go(
    make_vm, prod, settings, django_capture_on_commit_callbacks
):
    from policies import engine
    from policies.services import apply_policy

    settings.POLICY_SPREAD_MINUTES = 0
    _running(make_vm, prod, "db-01", {"env": "prod"})
    policy = apply_policy(actor=None, project=prod, text=POLICY.format(when_stopped="skip"))
    Policy.objects.filter(pk=policy.pk).update(created_at=datetime(2026, 1, 1, tzinfo=UTC))
    for day in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            engine.tick(datetime(2026, 1, 1 + day, 21, 30, tzinfo=UTC))
    Snapshot.objects.update(billed_bytes=1000)
    stricter = POLICY.format(when_stopped="skip").replace("daily: 7", "daily: 2")
    outcome = simulate(actor=None, project=prod, text=stricter)
    assert len(outcome.existing_deleted) == 3 and outcome.freed_bytes == 3000
    assert Snapshot.objects.count() == 6  # 5 daily + 1 weekly, all still there: it was only a preview
