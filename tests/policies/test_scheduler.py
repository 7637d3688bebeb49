from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from clouddigit.compute import services as compute
from clouddigit.compute import work as compute_work
from clouddigit.compute.models import VM
from policies import engine
from policies.models import Policy, SlotRun
from policies.schedule import slots_between, spread
from policies.services import apply_policy
from policies.spec import parse
from snapshots.models import Snapshot

POLICY = """\
name: acme-prod-default
schedule:
  daily: 02:00 BDT
  weekly: Sun 03:00 BDT
retention:
  daily: 7
  weekly: 4
scope:
  vm_tags: ['env=prod']
application_consistent: true
notify_channel: slack-ops
when_stopped: {when_stopped}
"""


def _policy(prod, when_stopped="skip", created=datetime(2026, 1, 1, tzinfo=UTC)) -> Policy:
    """The policy, as if applied at `created` (slots before that are not the policy's)."""
    policy = apply_policy(actor=None, project=prod, text=POLICY.format(when_stopped=when_stopped))
    Policy.objects.filter(pk=policy.pk).update(created_at=created)
    return Policy.objects.get(pk=policy.pk)


def _running(make_vm, prod, name, tags):
    vm = make_vm(prod, name, tags=tags)
    compute.start_vm(actor=None, vm=vm)
    compute_work.apply_power_state(str(vm.pk))
    return VM.objects.get(pk=vm.pk)


def test_bdt_slots_are_stored_in_utc():
    spec = parse(POLICY.format(when_stopped="skip"))
    start = datetime(2026, 1, 3, 0, 0, tzinfo=UTC)  # a Saturday
    slots = slots_between(spec, start, start + timedelta(days=2))
    assert slots == [
        (datetime(2026, 1, 3, 20, 0, tzinfo=UTC), "daily"),  # 02:00 BDT on Sunday the 4th
        (datetime(2026, 1, 3, 21, 0, tzinfo=UTC), "weekly"),  # Sun 03:00 BDT
        (datetime(2026, 1, 4, 20, 0, tzinfo=UTC), "daily"),
    ]


def test_starts_spread_deterministically_over_the_window():
    window = timedelta(minutes=10)
    offsets = {spread("policy", f"vm-{n}", window) for n in range(200)}
    assert len(offsets) > 100 and all(timedelta(0) <= o < window for o in offsets)
    assert spread("policy", "vm-1", window) == spread("policy", "vm-1", window)


@pytest.fixture
def no_spread(settings):
    settings.POLICY_SPREAD_MINUTES = 0


@pytest.mark.slow
def test_sixty_days_keep_the_newest_seven_daily_and_four_weekly(
    make_vm, prod, no_spread, django_capture_on_commit_callbacks
):
    vm = _running(make_vm, prod, "db-01", {"env": "prod"})
    _running(make_vm, prod, "dev-01", {"env": "dev"})  # out of scope: never snapshotted
    policy = _policy(prod)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for day in range(60):
        with django_capture_on_commit_callbacks(execute=True):
            engine.tick(start + timedelta(days=day, hours=21, minutes=30))
    runs = SlotRun.objects.filter(policy=policy, vm=vm, outcome="created")
    kept = {
        klass: list(runs.filter(klass=klass, retired=False).order_by("-slot_at"))
        for klass in ("daily", "weekly")
    }
    assert len(kept["daily"]) == 7 and len(kept["weekly"]) == 4
    newest_daily = sorted(runs.filter(klass="daily").values_list("slot_at", flat=True))[-7:]
    assert sorted(run.slot_at for run in kept["daily"]) == newest_daily
    alive = Snapshot.objects.filter(policy_name=policy.name)
    assert alive.count() == 11 and set(alive.values_list("vm__name", flat=True)) == {"db-01"}
    assert {run.snapshot_id for run in kept["daily"] + kept["weekly"]} == set(
        alive.values_list("pk", flat=True)
    )


def test_a_second_tick_for_the_same_minute_creates_nothing(
    make_vm, prod, no_spread, django_capture_on_commit_callbacks
):
    _running(make_vm, prod, "db-01", {"env": "prod"})
    _policy(prod, created=datetime(2026, 1, 3, 12, 0, tzinfo=UTC))
    now = datetime(2026, 1, 3, 21, 30, tzinfo=UTC)  # Saturday: 02:00 and 03:00 BDT on Sunday
    with django_capture_on_commit_callbacks(execute=True):
        first = engine.tick(now)
        second = engine.tick(now)
    assert len(first) == 2 and second == []  # the daily and the weekly slot of that Sunday, once
    assert Snapshot.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_ticks_create_each_snapshot_once(make_vm, prod, no_spread):
    _running(make_vm, prod, "db-01", {"env": "prod"})
    _running(make_vm, prod, "db-02", {"env": "prod"})
    _policy(prod, created=datetime(2026, 1, 3, 12, 0, tzinfo=UTC))
    now = datetime(2026, 1, 3, 21, 30, tzinfo=UTC)  # Saturday: 02:00 and 03:00 BDT on Sunday
    results, barrier = [], threading.Barrier(2)

    def run():
        barrier.wait()
        try:
            results.append(len(engine.tick(now)))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results)[-1] + sorted(results)[0] == 4  # 2 VMs x 2 slots, split between the ticks
    assert (
        SlotRun.objects.count() == 4 and Snapshot.objects.filter(policy_name="acme-prod-default").count() == 4
    )


@pytest.mark.parametrize(
    ("when_stopped", "outcome", "snapshots"), [("skip", "skipped", 0), ("force", "created", 1)]
)
def test_a_stopped_vm_is_skipped_or_forced(
    make_vm, prod, no_spread, when_stopped, outcome, snapshots, django_capture_on_commit_callbacks
):
    make_vm(prod, "web-01", tags={"env": "prod"})  # stopped
    policy = _policy(prod, when_stopped, created=datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    with django_capture_on_commit_callbacks(execute=True):
        engine.tick(datetime(2026, 1, 5, 20, 30, tzinfo=UTC))
    run = SlotRun.objects.get(policy=policy)
    assert run.outcome == outcome and Snapshot.objects.count() == snapshots
    if outcome == "skipped":
        assert "stopped at the scheduled time" in run.reason


def test_a_slot_past_the_catch_up_window_is_recorded_as_missed(make_vm, prod, no_spread, settings):
    settings.POLICY_CATCH_UP_HOURS = 6
    _running(make_vm, prod, "db-01", {"env": "prod"})
    _policy(prod, created=datetime(2026, 1, 5, 10, 0, tzinfo=UTC))
    engine.tick(datetime(2026, 1, 6, 9, 0, tzinfo=UTC))  # the 20:00 UTC slot of the 5th is 13 hours old
    run = SlotRun.objects.get(slot_at=datetime(2026, 1, 5, 20, 0, tzinfo=UTC))
    assert run.outcome == "missed" and "catch-up window" in run.reason
    assert not Snapshot.objects.exists()


def test_coverage_shows_each_vm_in_scope_and_why_one_is_missing(
    client, alice, make_vm, prod, no_spread, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    from policies.coverage import coverage

    _running(make_vm, prod, "db-01", {"env": "prod"})
    make_vm(prod, "web-01", tags={"env": "prod"})  # stopped: skipped
    make_vm(prod, "dev-01", tags={"env": "dev"})  # not in scope
    policy = _policy(prod, created=datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    now = datetime(2026, 1, 5, 20, 30, tzinfo=UTC)
    with django_capture_on_commit_callbacks(execute=True):
        engine.tick(now)
    rows = {row.vm.name: row for row in coverage(policy, now)}
    assert set(rows) == {"db-01", "web-01"}
    assert rows["db-01"].covered and not rows["web-01"].covered
    assert "stopped at the scheduled time" in rows["web-01"].reason

    client.force_login(alice)
    page = client.get(reverse("policies:detail", args=[policy.pk])).content.decode()
    assert "Coverage" in page and "web-01" in page and "stopped at the scheduled time" in page


def test_a_vm_that_gains_the_tag_is_covered_from_the_next_slot(
    make_vm, prod, no_spread, django_capture_on_commit_callbacks
):
    policy = _policy(prod, created=datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    vm = _running(make_vm, prod, "db-01", {"env": "stage"})
    with django_capture_on_commit_callbacks(execute=True):
        engine.tick(datetime(2026, 1, 5, 20, 30, tzinfo=UTC))
        assert not SlotRun.objects.filter(vm=vm).exists()
        VM.objects.filter(pk=vm.pk).update(tags={"env": "prod"})
        engine.tick(datetime(2026, 1, 6, 20, 30, tzinfo=UTC))
    assert list(SlotRun.objects.filter(policy=policy, vm=vm).values_list("outcome", flat=True)) == ["created"]


def test_retention_never_deletes_a_pinned_snapshot(
    make_vm, prod, no_spread, django_capture_on_commit_callbacks
):
    from snapshots.services import set_hold

    vm = _running(make_vm, prod, "db-01", {"env": "prod"})
    policy = _policy(prod, created=datetime(2026, 1, 1, tzinfo=UTC))
    start = datetime(2026, 1, 1, 21, 30, tzinfo=UTC)
    with django_capture_on_commit_callbacks(execute=True):
        engine.tick(start)
    first = SlotRun.objects.get(policy=policy, vm=vm, klass="daily").snapshot
    set_hold(actor=None, snapshot=first, hold=True)
    for day in range(1, 10):
        with django_capture_on_commit_callbacks(execute=True):  # the worker takes each day's snapshot
            engine.tick(start + timedelta(days=day))
    assert Snapshot.objects.filter(pk=first.pk).exists()
    kept = SlotRun.objects.filter(policy=policy, klass="daily", outcome="created", retired=False)
    assert kept.count() == 8  # the newest 7 and the pinned one


@pytest.mark.parametrize(
    ("choice", "policies_left", "snapshots_left", "origin"),
    [("keep", 0, 2, "manual"), ("retain", 1, 2, "policy"), ("delete", 0, 0, None)],
)
def test_deleting_a_policy_says_what_becomes_of_its_snapshots(
    make_vm,
    prod,
    no_spread,
    django_capture_on_commit_callbacks,
    choice,
    policies_left,
    snapshots_left,
    origin,
):
    from clouddigit.errors import InvalidRequest
    from policies.services import delete_policy

    _running(make_vm, prod, "db-01", {"env": "prod"})
    policy = _policy(prod, created=datetime(2026, 1, 3, 12, 0, tzinfo=UTC))
    with django_capture_on_commit_callbacks(execute=True):
        engine.tick(datetime(2026, 1, 3, 21, 30, tzinfo=UTC))
    with pytest.raises(InvalidRequest, match="Say what becomes"):
        delete_policy(actor=None, policy=policy, snapshots="")
    if choice == "delete":
        with pytest.raises(InvalidRequest, match=f"Type '{policy.name}' to confirm"):
            delete_policy(actor=None, policy=policy, snapshots=choice, confirm="")
    with django_capture_on_commit_callbacks(execute=True):
        delete_policy(actor=None, policy=policy, snapshots=choice, confirm=policy.name)
    assert Policy.objects.count() == policies_left
    assert Snapshot.objects.count() == snapshots_left
    if origin:
        assert set(Snapshot.objects.values_list("origin", flat=True)) == {origin}
    if choice == "retain":
        with django_capture_on_commit_callbacks(execute=True):
            engine.tick(datetime(2026, 1, 4, 21, 30, tzinfo=UTC))
        assert Snapshot.objects.count() == 2  # no new snapshot


def test_a_throttled_start_is_retried_within_the_window(
    make_vm, prod, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from clouddigit.errors import BackendUnavailable

    settings.POLICY_SPREAD_MINUTES = 10
    _running(make_vm, prod, "db-01", {"env": "prod"})
    policy = _policy(prod, created=datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    real_take = engine.LIVE.take

    def throttled(*args, **kwargs):
        raise BackendUnavailable("429 SlowDown")

    monkeypatch.setattr(engine.LIVE, "take", throttled)
    engine.tick(datetime(2026, 1, 5, 20, 10, tzinfo=UTC))
    run = SlotRun.objects.get(policy=policy, klass="daily")
    assert run.outcome == "throttled" and "SlowDown" in run.reason
    monkeypatch.setattr(engine.LIVE, "take", real_take)
    with django_capture_on_commit_callbacks(execute=True):
        engine.tick(datetime(2026, 1, 5, 20, 10, 50, tzinfo=UTC))
    run.refresh_from_db()
    assert run.outcome == "created" and run.snapshot is not None
