"""Thin tasks: run the drill (`work.py`) under the drill's claim."""

from __future__ import annotations

from celery import shared_task

from clouddigit.operations import Waiting, run
from policies import work
from policies.models import Drill


@shared_task(bind=True, max_retries=None)
def drill(self, drill_id: str) -> None:
    try:
        run(Drill, drill_id, state=Drill.State.RUNNING, step=work.perform)
    except Waiting as waiting:
        raise self.retry(countdown=waiting.seconds, exc=waiting) from None
