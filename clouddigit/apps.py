from __future__ import annotations

from django.apps import AppConfig


class CloudDigitConfig(AppConfig):
    name = "clouddigit"

    def ready(self) -> None:
        # Every process that starts Django (manage.py, the WSGI server, tests, the worker) loads the Celery
        # app here, so that `@shared_task` sends to its broker. Not from the package's __init__: the CLI
        # imports `clouddigit.cli` and must load neither Django nor Celery.
        from clouddigit import celery  # noqa: F401
