"""Thin tasks: claim the row, call the service, record a failure on the row so the console can show it."""

from __future__ import annotations

from celery import shared_task

from clouddigit.operations import claimed
from images import cleanup, services
from images.models import Image


@shared_task(acks_late=True)
def process(image_id: str) -> None:
    with claimed(Image, image_id) as claim:
        if not claim:
            return
        try:
            services.process(image_id)
        except Exception as error:
            services.fail(image_id, str(error))
            raise


@shared_task
def sweep() -> None:
    """Scratch files and multipart uploads that died with their operation (scheduled by beat)."""
    cleanup.sweep()
