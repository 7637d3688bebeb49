"""Queue Celery tasks only once the transaction that wrote their rows has committed.

A task queued inside a transaction could run before the commit and find nothing (or find the old
state); `on_commit` also means a rolled-back operation queues nothing.
"""

from __future__ import annotations

from celery import Task
from django.db import transaction

REPLICATION_QUEUE = "replication"


def hypervisor_queue(region_slug: str) -> str:
    return f"hypervisor.{region_slug}"


def enqueue(task: Task, *args: object, queue: str = "default") -> None:
    transaction.on_commit(lambda: task.apply_async(args=args, queue=queue))
