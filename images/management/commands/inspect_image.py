"""`manage.py inspect_image PATH [--declared-format F]`: one JSON verdict on stdout, exit 1 if refused."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from images.inspection import inspect


class Command(BaseCommand):
    help = "Read a disk image's headers, decide its format and whether it is safe to open; print JSON."
    # Reads one file; nothing of the project needs checking, so it also runs where the database is down.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path")
        parser.add_argument("--declared-format", default=None, help="the format the uploader declared")

    def handle(self, *args: Any, path: str, declared_format: str | None, **options: Any) -> None:
        verdict = inspect(path, declared_format)
        self.stdout.write(json.dumps(verdict.as_dict()))
        if not verdict.safe:
            # Not CommandError: that prints "Error: ..." on stderr, and the JSON already tells why.
            self.stdout.flush()
            sys.exit(1)
