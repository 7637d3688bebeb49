"""What Celery beat starts for images (settings.CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

from celery import shared_task

from images import cleanup


@shared_task
def sweep() -> None:
    """Scratch files and multipart uploads that died with their operation (hourly)."""
    cleanup.sweep()
