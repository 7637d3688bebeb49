"""The Celery app. Its configuration is the CELERY_* part of clouddigit/settings.py."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clouddigit.settings")

app = Celery("clouddigit")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()  # <app>/tasks.py: the worker steps
app.autodiscover_tasks(related_name="beat")  # <app>/beat.py: what beat starts


@app.on_after_configure.connect
def _create_broker_folders(sender: Celery, **kwargs) -> None:
    # kombu's file-system transport expects its folders to exist.
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder"):
        if key in options:
            Path(options[key]).mkdir(parents=True, exist_ok=True)
