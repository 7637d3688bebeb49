"""The audit log as CSV, streamed (the log can be long): served by the console and the API alike."""

from __future__ import annotations

import csv

from django.http import StreamingHttpResponse
from django.utils import timezone


class _Echo:
    def write(self, value: str) -> str:
        return value


def _rows(entries):
    writer = csv.writer(_Echo())
    yield writer.writerow(
        [
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
    )
    for entry in entries.select_related("account", "project__account").iterator(chunk_size=2000):
        yield writer.writerow(
            [
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
        )


def csv_response(entries) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_rows(entries), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-log-{stamp}.csv"'
    return response
