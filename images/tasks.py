"""Thin tasks: run the worker step (`processing.py`) under the row's claim; `operations.run` records a
failure on the row so the console can show it."""

from __future__ import annotations

from celery import shared_task

from clouddigit.operations import run
from images import processing
from images.models import Image


@shared_task(acks_late=True)
def process(image_id: str) -> None:
    run(Image, image_id, state=Image.State.PROCESSING, step=processing.process, fail=processing.fail)
