from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from clouddigit.operations import claimed
from policies import drills, engine
from policies.models import Drill

DRILL_WAIT_SECONDS = 10


@shared_task
def tick() -> None:
    """Every minute (beat): run the snapshot policies' due slots and their retention."""
    engine.tick(timezone.now())


@shared_task(bind=True, max_retries=None)
def drill(self, drill_id: str) -> None:
    with claimed(Drill, drill_id) as claim:
        if not claim:
            return
        try:
            drills.perform(drill_id)
        except drills.DrillWaiting as waiting:
            claim.waiting(DRILL_WAIT_SECONDS)
            raise self.retry(countdown=DRILL_WAIT_SECONDS, exc=waiting) from None


@shared_task
def due_drills() -> None:
    """Daily (beat): a restore drill per policy each quarter."""
    drills.due(timezone.now())
