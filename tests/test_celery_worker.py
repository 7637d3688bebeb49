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


def _redis_broker() -> str:
    from tests.conftest import require_service

    require_service("Redis", "127.0.0.1", 6379)
    return "redis://127.0.0.1:6379/14"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broker", ["redis", "filesystem"])
def test_start_vm_runs_on_a_real_worker(broker, make_vm, prod, alice, tmp_path):
    broker_url = _redis_broker() if broker == "redis" else "filesystem://localhost/"
    vm = make_vm(prod, "db-01")
    env = _env(broker_url, tmp_path / "var")
    # The volume folder is the test's, so the worker finds the files the rows name.
    worker = subprocess.Popen(
        [
            sys.executable,
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
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        publish = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                "from django.contrib.auth.models import User; from clouddigit.compute import services; "
                "from clouddigit.compute.models import VM; "
                "alice = User.objects.get(username='alice'); "
                f"services.start_vm(actor=alice, vm=VM.objects.get(pk='{vm.pk}'))",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert publish.returncode == 0, publish.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            vm.refresh_from_db()
            if vm.state == VM.State.RUNNING:
                break
            assert worker.poll() is None, worker.stdout.read()
            time.sleep(0.3)
        assert vm.state == VM.State.RUNNING, f"still {vm.state} after 60 s"
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=30)
    assert "apply_power_state" in output and "succeeded" in output
