"""A real task through a real broker to a real worker process, seen in the database.

The service call and the worker both run as separate processes on the test database, so nothing
here is eager: the message crosses the broker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from clouddigit.compute.models import VM
from tests.conftest import redis_broker_url

ROOT = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _env(broker_url: str, var_dir: Path) -> dict:
    return {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": broker_url,
        "CLOUDDIGIT_VAR_DIR": str(var_dir),
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }


WORKER = [
    "-m",
    "celery",
    "-A",
    "clouddigit",
    "worker",
    "-Q",
    "hypervisor.bd-dha-1,default",
    "--pool",
    "solo",
    "--loglevel",
    "INFO",
    "--without-mingle",
    "--without-gossip",
]


def _publish_and_wait(broker: str, tmp_path, code: str, done) -> str:
    """Run `code` in a `manage.py shell` (it queues tasks), let a worker process run them, wait until
    `done()` is true; return the worker's log."""
    broker_url = redis_broker_url() if broker == "redis" else "filesystem://localhost/"
    env = _env(broker_url, tmp_path / "var")
    worker = subprocess.Popen(
        [sys.executable, *WORKER],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        publish = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert publish.returncode == 0, publish.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not done():
            assert worker.poll() is None, worker.stdout.read()
            time.sleep(0.3)
        assert done(), "the worker did not finish within 60 s"
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=30)
    return output


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broker", ["redis", "filesystem"])
def test_start_vm_runs_on_a_real_worker(broker, make_vm, prod, alice, tmp_path):
    vm = make_vm(prod, "db-01")
    code = (
        "from django.contrib.auth.models import User; from clouddigit.compute import services; "
        "from clouddigit.compute.models import VM; alice = User.objects.get(username='alice'); "
        f"services.start_vm(actor=alice, vm=VM.objects.get(pk='{vm.pk}'))"
    )
    output = _publish_and_wait(
        broker, tmp_path, code, lambda: VM.objects.get(pk=vm.pk).state == VM.State.RUNNING
    )
    assert "apply_power_state" in output and "succeeded" in output


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_policy_tick_snapshots_through_a_real_worker(make_vm, prod, tmp_path):
    """The scheduler on a controllable clock, the snapshot taken by a worker process via the broker."""
    from policies.models import SlotRun
    from policies.services import apply_policy
    from snapshots.models import Snapshot
    from tests.policies.test_scheduler import POLICY

    vm = make_vm(prod, "db-01", tags={"env": "prod"})
    policy = apply_policy(actor=None, project=prod, text=POLICY.format(when_stopped="force"))
    code = (
        "from datetime import datetime, UTC; from django.conf import settings; "
        "from policies import engine; from policies.models import Policy; "
        "settings.POLICY_SPREAD_MINUTES = 0; "
        f"Policy.objects.filter(pk='{policy.pk}')"
        ".update(created_at=datetime(2026, 1, 5, 12, 0, tzinfo=UTC)); "
        "engine.tick(datetime(2026, 1, 5, 20, 30, tzinfo=UTC))"
    )
    broker = "redis" if os.environ.get("CELERY_BROKER_URL", "").startswith("redis") else "filesystem"

    def taken():
        return Snapshot.objects.filter(vm=vm, state=Snapshot.State.AVAILABLE).exists()

    output = _publish_and_wait(broker, tmp_path, code, taken)
    run = SlotRun.objects.get(policy=policy, vm=vm)
    assert run.outcome == "created" and run.snapshot.policy_name == policy.name
    assert "snapshots.tasks.take" in output and "succeeded" in output
