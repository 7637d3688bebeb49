from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from policies import drills, engine


@shared_task
def tick() -> None:
    """Every minute (beat): run the snapshot policies' due slots and their retention."""
    engine.tick(timezone.now())


@shared_task
def drill(drill_id: str) -> None:
    drills.perform(drill_id)


@shared_task
def due_drills() -> None:
    """Daily (beat): a restore drill per policy each quarter."""
    drills.due(timezone.now())
