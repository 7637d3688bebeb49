"""What Celery beat starts for policies (settings.CELERY_BEAT_SCHEDULE). Beat acts like a user: it calls
the request side, which queues the worker steps (docs/decisions.md, services -> tasks -> work)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from policies import drills, engine


@shared_task
def tick() -> None:
    """Every minute: run the snapshot policies' due slots and their retention."""
    engine.tick(timezone.now())


@shared_task
def due_drills() -> None:
    """Daily: a restore drill per policy each quarter."""
    drills.due(timezone.now())
