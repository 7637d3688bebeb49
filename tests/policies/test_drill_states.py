"""A drill's state changes only through its state machine, and its worker claims it with one conditional
UPDATE from the state the step starts from."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from clouddigit import operations
from clouddigit.errors import Conflict
from clouddigit.statemachine import TransitionRefused
from policies import drills, work
from policies.models import Drill


@pytest.fixture
def drill(prod) -> Drill:
    return Drill.objects.create(
        project=prod, vm_name="db-01", snapshot_name="db-01-nightly", requested_by="system"
    )


def _finished(drill: Drill, state: str) -> Drill:
    drill.transition(state, finished_at=timezone.now())
    return Drill.objects.get(pk=drill.pk)


def test_a_running_drill_passes_or_fails(drill):
    drill.transition(Drill.State.PASSED, seconds=1.5)
    assert Drill.objects.get(pk=drill.pk).state == Drill.State.PASSED


@pytest.mark.parametrize(
    "start, target",
    [
        (Drill.State.PASSED, Drill.State.RUNNING),  # a passed drill is final
        (Drill.State.PASSED, Drill.State.FAILED),
        (Drill.State.FAILED, Drill.State.PASSED),  # only a run passes it
    ],
)
def test_a_drill_refuses_a_transition_its_state_does_not_allow(drill, start, target):
    finished = _finished(drill, start)
    with pytest.raises(TransitionRefused) as refused:
        finished.transition(target)
    assert refused.value.current == start
    assert Drill.objects.get(pk=drill.pk).state == start


def test_a_refused_transition_reads_the_state_from_the_database_not_the_object(drill):
    stale = Drill.objects.get(pk=drill.pk)  # still says RUNNING
    _finished(drill, Drill.State.PASSED)
    with pytest.raises(TransitionRefused) as refused:
        stale.transition(Drill.State.FAILED, error="late")
    assert refused.value.current == Drill.State.PASSED
    assert Drill.objects.get(pk=drill.pk).error == ""


def test_a_passed_drill_is_not_retried(operator, drill):
    passed = _finished(drill, Drill.State.PASSED)
    with pytest.raises(Conflict, match="passed: there is nothing to retry"):
        drills.retry_drill(actor=operator, drill=passed)


def test_giving_up_leaves_a_finished_drill_as_it_is(drill):
    passed = _finished(drill, Drill.State.PASSED)
    work.give_up(passed, "its worker was lost 5 times")
    assert Drill.objects.get(pk=drill.pk).state == Drill.State.PASSED


def test_giving_up_fails_a_running_drill_with_the_reason(drill):
    work.give_up(drill, "its worker was lost 5 times")
    failed = Drill.objects.get(pk=drill.pk)
    assert failed.state == Drill.State.FAILED and failed.error == "Gave up: its worker was lost 5 times"


def test_a_worker_claims_only_a_drill_in_the_state_its_step_starts_from(drill):
    ran = []
    failed = _finished(drill, Drill.State.FAILED)
    assert operations.run(Drill, failed.pk, state=Drill.State.RUNNING, step=ran.append) is None
    assert ran == [] and Drill.objects.get(pk=drill.pk).attempts == 0


def test_a_second_delivery_does_not_run_a_drill_another_worker_holds(drill):
    Drill.objects.filter(pk=drill.pk).update(
        claimed_by="worker-1:4242", lease_until=timezone.now() + timedelta(minutes=1)
    )
    ran = []
    assert operations.run(Drill, drill.pk, state=Drill.State.RUNNING, step=ran.append) is None
    assert ran == []


def test_a_claimed_step_runs_once_and_hands_the_row_back_to_the_queue(drill):
    ran = []
    operations.run(Drill, drill.pk, state=Drill.State.RUNNING, step=ran.append)
    held = Drill.objects.get(pk=drill.pk)
    assert ran == [drill.pk] and held.attempts == 1 and held.claimed_by == ""
