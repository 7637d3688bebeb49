"""Every `clouddigit` call pays for what importing the CLI loads: it must not load Django or Celery."""

from __future__ import annotations

import subprocess
import sys

LIGHT = (
    "import clouddigit.cli.main, sys; "
    "loaded = sorted(m for m in sys.modules if m.startswith(('django', 'celery', 'kombu'))); "
    "assert not loaded, loaded"
)


def test_importing_the_cli_loads_neither_django_nor_celery():
    result = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stderr
