"""The README's start command as a new user runs it: embedded defaults (SQLite, file-system broker,
SeaweedFS, libvirt test driver), a login, a worker that processes the demo's tasks, Ctrl-C that stops
everything, and a second run that reuses the data folder."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


class Console:
    def __init__(self, var_dir: Path, port: int, s3_port_base: int):
        self.var_dir, self.port = var_dir, port
        self.env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
        self.env.update(
            CLOUDDIGIT_VAR_DIR=str(var_dir),
            CLOUDDIGIT_PORT=str(port),
            CLOUDDIGIT_S3_PORT_BASE=str(s3_port_base),
        )
        self.output: list[str] = []

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runconsole"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 180
        for line in self.process.stdout:
            self.output.append(line)
            if "Press Ctrl-C" in line:
                return
            assert time.monotonic() < deadline, "".join(self.output)
        pytest.fail("runconsole exited before it was ready:\n" + "".join(self.output))

    def child_pids(self) -> list[int]:
        line = next(line for line in self.output if line.startswith("Processes:"))
        return [int(pid) for pid in re.findall(r"pid (\d+)", line)]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        rest, _ = self.process.communicate(timeout=60)
        self.output.append(rest)
        return self.process.returncode

    def login(self, username: str) -> requests.Session:
        password = json.loads((self.var_dir / "demo-logins.json").read_text())[username]
        session = requests.Session()
        base = f"http://127.0.0.1:{self.port}"
        session.get(f"{base}/login/", timeout=10)
        response = session.post(
            f"{base}/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
            },
            headers={"Referer": f"{base}/login/"},
            timeout=10,
        )
        assert response.url.endswith("/compute/vms/"), response.text[:500]
        return session


@pytest.mark.e2e
@pytest.mark.slow
def test_start_command_runs_everything_and_ctrl_c_stops_it(tmp_path):
    port, s3_base = _free_port(), 19500
    console = Console(tmp_path / "var", port, s3_base)
    console.start()
    try:
        text = "".join(console.output)
        assert f"http://127.0.0.1:{port}/" in text and "acme-admin" in text
        pids = console.child_pids()
        assert len(pids) == 5  # two SeaweedFS servers, worker, beat, web

        session = console.login("acme-admin")
        base = f"http://127.0.0.1:{port}"
        # The demo queued "start" for db-01 before the worker ran; the worker picks it up.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            page = session.get(f"{base}/compute/vms/?name=db-01&state=running", timeout=10).text
            if "db-01" in page:
                break
            time.sleep(1)
        assert "db-01" in page, "the worker never started db-01"
        status = session.get(f"{base}/status/", timeout=30).text
        assert "● down" not in status and status.count("● up") == 7, status  # 3 hosts, 2 stores, 2 folders
        static = session.get(f"{base}/static/vendor/htmx-2.0.11.min.js", timeout=10)
        assert static.status_code == 200 and "htmx" in static.text
    finally:
        code = console.stop()
    assert code == 0, "".join(console.output)
    assert not _listening(port) and not _listening(s3_base)
    assert [pid for pid in pids if _pid_alive(pid)] == []

    again = Console(tmp_path / "var", port, s3_base)
    again.start()
    try:
        assert "created VM" not in "".join(again.output)  # the demo found everything in place
        again.login("acme-admin")
    finally:
        assert again.stop() == 0
