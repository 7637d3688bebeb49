"""Long operations that survive a dead worker: leases, claims and the reconciler.

A message is not a reliable record of work to do: kombu's `filesystem://` broker deletes it when a
worker takes it (so `acks_late` never redelivers after a SIGKILL), and Redis or RabbitMQ redeliver late
or twice. The operation's row is the record instead. Its `lease_until` says until when someone is
answerable for it: the queue (for `QUEUE_GRACE` after the row was queued) or the worker that claimed it
(for `LEASE`, renewed by a thread while the task runs). A task runs a step only through `run()`, which
claims the row in the state the step starts from with one conditional UPDATE (never a read, then an act),
so two deliveries of one operation never run at once; the reconciler (beat) re-queues the next step of
every operation in a non-final state whose lease has run out, and after `MAX_ATTEMPTS` claims that all
ended without finishing gives up, failing the operation with that reason.

Each app registers its operations (model, non-final states, how to queue the next step, how to give up)
in its `AppConfig.ready()`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections, models
from django.db.models import F, Q
from django.utils import timezone

log = logging.getLogger(__name__)


class Leased(models.Model):
    """The fields every long operation's row carries."""

    lease_until = models.DateTimeField(
        null=True, blank=True, help_text="The queue or the claiming worker answers for the row until then"
    )
    claimed_by = models.CharField(max_length=100, blank=True, help_text="host:pid of the worker on it")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Claims since the owner last asked")

    class Meta:
        abstract = True

    @property
    def lease_expired(self) -> bool:
        return self.lease_until is not None and self.lease_until < timezone.now()

    @property
    def worker_on_it(self) -> bool:
        """A live worker holds the row (claimed, lease not run out)."""
        return bool(self.claimed_by) and not self.lease_expired


def lease_seconds() -> int:
    return settings.OPERATION_LEASE_SECONDS


def queued(*, delay_seconds: float = 0) -> dict:
    """The fields to write with a row whose next step is being queued now (or in `delay_seconds`)."""
    grace = timedelta(seconds=settings.OPERATION_QUEUE_GRACE_SECONDS + delay_seconds)
    return {"claimed_by": "", "lease_until": timezone.now() + grace}


def restarted() -> dict:
    """`queued()` for an owner's retry: the attempts start again."""
    return {**queued(), "attempts": 0}


@dataclass(frozen=True)
class Kind:
    model: type[Leased]
    active: tuple[str, ...]
    resume: Callable[[Leased], None]
    give_up: Callable[[Leased, str], None]
    where: Q | None = None


KINDS: list[Kind] = []


def register(model, *, active, resume, give_up, where: Q | None = None) -> None:
    """`resume(row)` queues the row's next idempotent step; `give_up(row, reason)` fails it. `where`
    narrows the rows this registration answers for, when another operation owns some rows of these
    states (a restored volume is created by its restore, not by the volume's own operation)."""
    KINDS.append(Kind(model, tuple(active), resume, give_up, where))


# --- Worker side ------------------------------------------------------------------------------------


def _renew_until_stopped(model, pk, token: str, stop: threading.Event) -> None:
    period = max(lease_seconds() / 3, 0.5)
    try:
        while not stop.wait(period):
            try:
                until = timezone.now() + timedelta(seconds=lease_seconds())
                model._default_manager.filter(pk=pk, claimed_by=token).update(lease_until=until)
            except Exception:  # a busy database: the next renewal tries again
                log.warning("could not renew the lease of %s %s", model.__name__, pk, exc_info=True)
    finally:
        connections.close_all()  # this thread's own connections


class Waiting(Exception):
    """A step that cannot go on yet (a volume still detaching, a restore another worker finishes): the
    queue answers for the row for `seconds`, and the task retries itself then."""

    def __init__(self, reason: str, *, seconds: float):
        super().__init__(reason)
        self.seconds = seconds


class Claim:
    """A won claim (truthy); `waiting(seconds)` hands the row back to the queue for a planned retry."""

    def __init__(self, won: bool):
        self.won = won
        self.wait_seconds: float | None = None

    def __bool__(self) -> bool:
        return self.won

    def waiting(self, seconds: float) -> None:
        """The task retries itself in `seconds`: the queue answers for it until then, and a wait does
        not count as an attempt."""
        self.wait_seconds = seconds


@contextmanager
def claimed(model, pk, state: str) -> Iterator[Claim]:
    """Claim the row for this worker while the block runs, if it is in `state` (the state the step
    starts from); yields a false Claim (do nothing) when the row is in another state, gone, or held by
    another worker whose lease has not run out. The claim is one conditional UPDATE: the database decides
    which of two deliveries runs, not a state read beforehand."""
    now = timezone.now()
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:100]
    won = (
        model._default_manager.filter(pk=pk, state=state)
        .filter(Q(claimed_by="") | Q(lease_until__lt=now) | Q(lease_until__isnull=True))
        .update(
            claimed_by=token,
            lease_until=now + timedelta(seconds=lease_seconds()),
            attempts=F("attempts") + 1,
        )
    )
    claim = Claim(bool(won))
    if not won:
        yield claim
        return
    stop = threading.Event()
    renewer = threading.Thread(target=_renew_until_stopped, args=(model, pk, token, stop), daemon=True)
    renewer.start()
    try:
        yield claim
    finally:
        stop.set()
        renewer.join()
        # Not final (waiting, or its failure could not be recorded): the queue answers for it again.
        mine = model._default_manager.filter(pk=pk, claimed_by=token)
        if claim.wait_seconds is None:
            mine.update(**queued())
        else:
            mine.update(**queued(delay_seconds=claim.wait_seconds), attempts=F("attempts") - 1)


def run(model, pk, *, state: str, step: Callable, fail: Callable[[str, str], None] | None = None):
    """The one way a task runs a step of a long operation: claim the row in `state`, call `step(pk)`
    under the claim, and record an error on the row with `fail(pk, message)` before re-raising it.

    Returns what `step` returned, or None when the row was not claimed (finished, in another state,
    gone, or another worker's): duplicate deliveries and the reconciler's re-queues are harmless. A
    `Waiting` from the step is re-raised for the task to retry itself, and costs no attempt."""
    with claimed(model, pk, state) as claim:
        if not claim:
            return None
        try:
            return step(pk)
        except Waiting as waiting:
            claim.waiting(waiting.seconds)
            raise
        except Exception as error:
            if fail is not None:
                fail(pk, str(error))
            raise


def checkpoint(step: str) -> None:
    """Test-only fault injection, called at every recorded step of a long operation.

    When `CLOUDDIGIT_FAULT_KILL_FILE` names a file and the text in it is part of `step`, the file is
    removed and this process is killed with SIGKILL: a worker dying mid-task, once. Only the SIGKILL
    test's workers set the variable (tests/test_worker_kills.py); elsewhere this is one environ lookup.
    """
    kill_file = os.environ.get("CLOUDDIGIT_FAULT_KILL_FILE")
    if not kill_file or not os.path.exists(kill_file):
        return
    with open(kill_file) as wanted:
        kill_at = wanted.read().strip()
    if kill_at and kill_at in step:
        os.unlink(kill_file)
        log.warning("fault injection: killing the worker at %r", step)
        os.kill(os.getpid(), signal.SIGKILL)


# --- Reconciler -------------------------------------------------------------------------------------


def lost_reason(row: Leased) -> str:
    return (
        f"its worker was lost {row.attempts} times (killed or restarted mid-task); "
        "fix what kills it, then Retry"
    )


def reconcile(now: datetime | None = None) -> int:
    """Beat: re-queue the next step of every operation whose lease has run out; returns how many."""
    now, requeued = now or timezone.now(), 0
    for kind in KINDS:
        # Any: `state` is a field of each registered model, not of the abstract Leased.
        manager: models.Manager[Any] = kind.model._default_manager
        lapsed = manager.filter(state__in=kind.active).filter(
            Q(lease_until__lt=now) | Q(lease_until__isnull=True)
        )
        if kind.where is not None:
            lapsed = lapsed.filter(kind.where)
        for row in lapsed:
            if row.attempts >= settings.OPERATION_MAX_ATTEMPTS:
                kind.give_up(row, lost_reason(row))
                continue
            # Conditional on what was read: a worker claiming it meanwhile, or another reconciler, wins.
            same = manager.filter(pk=row.pk, claimed_by=row.claimed_by, state=row.state)
            same = (
                same.filter(lease_until=row.lease_until) if row.lease_until else same.filter(lease_until=None)
            )
            if same.update(**queued()) == 1:
                log.info("re-queueing %s %s (%s): its lease ran out", kind.model.__name__, row.pk, row.state)
                kind.resume(row)
                requeued += 1
    return requeued
