"""The audit log as CSV, streamed (the log can be long): served by the console and the API alike."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from django.utils import timezone

from clouddigit.csvfile import csv_download

HEADER = [
    "time_utc",
    "actor",
    "action",
    "outcome",
    "target_type",
    "target_id",
    "target",
    "account",
    "project",
    "source_ip",
    "message",
]


def _rows(entries):
    for entry in entries.select_related("account", "project__account").iterator(chunk_size=2000):
        yield [
            entry.at.isoformat(),
            entry.actor_name,
            entry.action,
            entry.outcome,
            entry.target_type,
            entry.target_id,
            entry.target_name,
            entry.account.slug if entry.account else "",
            str(entry.project) if entry.project else "",
            entry.source_ip or "",
            entry.message,
        ]


def csv_response(entries) -> StreamingHttpResponse:
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    return csv_download(HEADER, _rows(entries), f"audit-log-{stamp}.csv")
