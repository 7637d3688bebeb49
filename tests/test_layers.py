"""Each app's request side and worker side read one way: services -> tasks -> work.

The request side (`services`, and `policies.drills`) writes rows and queues tasks; a task (`tasks.py`) is
a thin Celery wrapper that runs a worker step; the worker side (`work`, `images.processing`) does the
step and never reaches back to its app's request side, its tasks or what beat starts (`beat.py`). Lazy
imports inside functions count too: a circle hidden in a function is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.conf import settings

from clouddigit.celery import app

ROOT = Path(__file__).resolve().parent.parent

# app: (its request side, its worker side); its tasks are `<app>.tasks`, what beat starts `<app>.beat`
APPS = {
    "clouddigit.compute": (["clouddigit.compute.services"], "clouddigit.compute.work"),
    "snapshots": (["snapshots.services"], "snapshots.work"),
    "images": (["images.services"], "images.processing"),
    "policies": (["policies.drills", "policies.services"], "policies.work"),
}


def _path(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(module: str) -> set[str]:
    """The project modules `module` imports anywhere in its code (top level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(_path(module).read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        found |= {name for name in names if _path(name) is not None}
    return found


def _reachable(module: str) -> set[str]:
    seen, pending = set(), [module]
    while pending:
        for imported in _imports(pending.pop()) - seen:
            seen.add(imported)
            pending.append(imported)
    return seen


@pytest.mark.parametrize("app", APPS)
def test_the_worker_side_never_reaches_its_request_side_or_tasks(app):
    request_side, work = APPS[app]
    assert _reachable(work) & {*request_side, f"{app}.tasks", f"{app}.beat"} == set()


@pytest.mark.parametrize("app", APPS)
def test_tasks_run_the_worker_side_and_never_reach_back_to_the_request_side(app):
    request_side, work = APPS[app]
    assert work in _imports(f"{app}.tasks")
    assert _reachable(f"{app}.tasks") & {*request_side, f"{app}.beat"} == set()


def test_the_check_sees_an_import_inside_a_function():
    """The walk counts lazy imports: `snapshots.diagnosis` imports the services inside `sweep`."""
    assert "snapshots.services" in _imports("snapshots.diagnosis")


def test_every_task_beat_starts_is_one_a_worker_loads():
    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled - set(app.tasks) == set()
    assert all(".beat." in name for name in scheduled)
