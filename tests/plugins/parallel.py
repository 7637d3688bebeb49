"""The suite under pytest-xdist (`./scripts/test` runs it with `-n auto`): what each worker keeps to itself,
and the order the long tests start in.

Each worker process (gw0, gw1, ...) is a pytest session of its own, so anything two sessions would share
is made per worker from `worker_index()`:

- the data folder: `settings.VAR_DIR` becomes `<data folder>/xdist/gwN` (uploads, scratch files);
- the test database: pytest-django already names it per worker (`..._gw0`), on SQLite and PostgreSQL;
- the test S3 server's ports (tests/plugins/seaweed.py);
- the Redis database of the real-worker tests (`redis_broker_url` in tests/conftest.py);
- the run command's ports (tests/e2e/test_runconsole.py: each test has its own).

Without xdist, `worker_index()` is 0 and nothing changes.
"""

from __future__ import annotations

import os

import pytest


def worker_index() -> int:
    """N for xdist worker "gwN", 0 outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    from django.conf import settings

    settings.VAR_DIR = settings.VAR_DIR / "xdist" / worker
    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the tests marked `slow` go first: started last, one of them would keep a worker busy
    for a minute after the others have run out of tests. `./scripts/test` also passes `--maxschedchunk 1`
    so that xdist hands them out one at a time rather than all in the first worker's first chunk. Every
    worker sorts the same way, as xdist requires; a run without xdist keeps the collection order."""
    if not hasattr(config, "workerinput"):
        return
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
