from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from policies import engine


@shared_task
def tick() -> None:
    """Every minute (beat): run the snapshot policies' due slots and their retention."""
    engine.tick(timezone.now())
