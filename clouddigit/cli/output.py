"""Rendering API objects: `-o table` (aligned, one token per cell), `-o json` (indented) and `-o id`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Column:
    header: str
    field: str
    render: Callable[[Any], str] = cell


def table(items: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    rows = [[column.header for column in columns]]
    rows += [[column.render(item.get(column.field)) for column in columns] for item in items]
    widths = [max(len(row[index]) for row in rows) for index in range(len(columns))]
    lines = ("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def show(data: dict[str, Any] | list[dict[str, Any]], output: str, columns: Sequence[Column]) -> None:
    """Print a list or a single object as the `-o` option asks; an empty list prints no id lines."""
    if output == "json":
        print(json.dumps(data, indent=2))
        return
    items = data if isinstance(data, list) else [data]
    if output == "id":
        for item in items:
            print(item["id"])
        return
    print(table(items, columns))
