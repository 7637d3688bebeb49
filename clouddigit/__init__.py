"""Cloud Digit. Nothing is imported here: the CLI (clouddigit.cli) must load without Django or Celery; the
Celery app is loaded when Django starts (clouddigit/apps.py) and by `celery -A clouddigit.celery`."""
