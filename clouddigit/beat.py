"""What Celery beat starts for the platform (settings.CELERY_BEAT_SCHEDULE); each app has its own."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from clouddigit import operations
from clouddigit.models import Heartbeat


@shared_task
def heartbeat(name: str = "worker") -> None:
    """Scheduled by beat every 30 s; its row tells the console that beat and a worker are alive."""
    Heartbeat.objects.update_or_create(name=name, defaults={"last_seen": timezone.now()})


@shared_task
def reconcile() -> None:
    """Beat: re-queue every long operation whose worker or message was lost (clouddigit/operations.py)."""
    operations.reconcile()
