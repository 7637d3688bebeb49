"""Rendering API objects: `-o table` (aligned, one token per cell), `-o json` (indented) and `-o id`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FORMATS = ("table", "json", "id")
EMPTY = "-"


def cell(value: Any) -> str:
    """One whitespace-free token, so that `awk '{print $3}'` always picks the third column."""
    if value is None or value == "" or value == {} or value == []:
        return EMPTY
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        text = ",".join(f"{key}={value[key]}" for key in sorted(value))
    elif isinstance(value, list):
        text = ",".join(str(item) for item in value)
    else:
        text = str(value)
    return "_".join(text.split())


def binary_size(value: Any) -> str:
    """1073741824 -> 1GiB, 1610612736 -> 1.5GiB."""
    if value is None:
        return EMPTY
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{size:.1f}".removesuffix(".0") + unit


def timestamp(value: Any) -> str:
    """An API timestamp as one UTC token to the second: 2026-11-26T02:00:03Z."""
    if not value:
        return EMPTY
    return datetime.fromisoformat(str(value)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Column:
    header: str
    field: str
    render: Callable[[Any], str] = cell
    # Reads the cell's value from the whole item when one field does not hold it.
    pick: Callable[[dict[str, Any]], Any] | None = None

    def text(self, item: dict[str, Any]) -> str:
        return self.render(self.pick(item) if self.pick else item.get(self.field))


def table(items: Sequence[dict[str, Any]], columns: Sequence[Column], *, header: bool = True) -> str:
    rows = [[column.header for column in columns]] if header else []
    rows += [[column.text(item) for column in columns] for item in items]
    if not rows:
        return ""
    widths = [max(len(row[index]) for row in rows) for index in range(len(columns))]
    lines = ("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def show(
    data: dict[str, Any] | list[dict[str, Any]],
    output: str,
    columns: Sequence[Column],
    *,
    header: bool = True,
) -> None:
    """Print a list or a single object as the `-o` option asks; an empty list prints no id lines (and,
    without a header, no table lines)."""
    if output == "json":
        print(json.dumps(data, indent=2))
        return
    items = data if isinstance(data, list) else [data]
    if output == "id":
        for item in items:
            print(item["id"])
        return
    text = table(items, columns, header=header)
    if text:
        print(text)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """A detail view: one `LABEL  value` line per pair, labels aligned; empty values as '-'."""
    width = max(len(label) for label, _ in pairs)
    lines = (f"{label.ljust(width)}  {EMPTY if value in (None, '') else value}" for label, value in pairs)
    return "\n".join(lines)


PROGRESS_REDRAW_SECONDS = 0.2


class Progress:
    """`uploading  42%  27.0/64.0 MiB  85.3 MiB/s`, redrawn in place on stderr a few times a second."""

    def __init__(self, total: int, label: str):
        self.total = total
        self.label = label
        self.started = time.monotonic()
        self.drawn_at: float | None = None

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.drawn_at is not None and now - self.drawn_at < PROGRESS_REDRAW_SECONDS and done < self.total:
            return
        self.drawn_at = now
        mib = 2**20
        rate = done / max(now - self.started, 0.001) / mib
        percent = 100 * done // self.total if self.total else 100
        sys.stderr.write(
            f"\r{self.label} {percent:3d}%  {done / mib:.1f}/{self.total / mib:.1f} MiB  {rate:.1f} MiB/s "
        )
        sys.stderr.flush()

    def finish(self) -> None:
        if self.drawn_at is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()
