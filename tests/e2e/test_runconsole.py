"""The README's start command as a new user runs it: embedded defaults (SQLite, file-system broker,
SeaweedFS, libvirt test driver) in production mode, a login, a worker that processes the demo's tasks,
Ctrl-C that stops everything, and a second run that reuses the data folder. Supervision: a worker that
dies is replaced, and a second signal while stopping does not break the shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from clouddigit.processes import group_members

ROOT = Path(__file__).resolve().parents[2]
# The consoles these tests start use CLOUDDIGIT_S3_PORT_BASE (two regions: base .. base+19) and the 20
# ports after it, so runs side by side with other port bases do not collide.
S3_PORT_BASE = int(os.environ.get("CLOUDDIGIT_S3_PORT_BASE", "19500"))


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
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.wait_for("Press Ctrl-C", timeout=180)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)

    def wait_for(self, text: str, timeout: float) -> str:
        """The first line of output (from the start) that contains `text`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in list(self.output) if text in line), None)
            if found:
                return found
            if self.process.poll() is not None and not self.reader.is_alive():
                pytest.fail(f"runconsole exited before printing {text!r}:\n" + "".join(self.output))
            time.sleep(0.2)
        pytest.fail(f"runconsole did not print {text!r} within {timeout:g} s:\n" + "".join(self.output))

    def child_pids(self) -> list[int]:
        line = next(line for line in self.output if line.startswith("Processes:"))
        return [int(pid) for pid in re.findall(r"pid (\d+)", line)]

    def stop(self, signum: int = signal.SIGINT) -> int:
        self.process.send_signal(signum)
        self.process.wait(timeout=60)
        self.reader.join(timeout=10)
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
    port, s3_base = _free_port(), S3_PORT_BASE
    console = Console(tmp_path / "var", port, s3_base)
    console.start()
    try:
        text = "".join(console.output)
        assert f"http://127.0.0.1:{port}/" in text and "acme-admin" in text
        assert "DEBUG" not in text  # production mode unless asked for
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
        # Production mode: static files collected by runconsole, under content-hashed names.
        htmx_url = re.search(r'src="(/static/vendor/htmx-2\.0\.11\.min\.[0-9a-f]+\.js)"', page).group(1)
        static = session.get(f"{base}{htmx_url}", timeout=10)
        assert static.status_code == 200 and "htmx" in static.text
        assert "max-age=315360000" in static.headers["Cache-Control"]
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


def _groups_alive(pgids: list[int]) -> dict[int, list[int]]:
    return {pgid: members for pgid in pgids if (members := group_members(pgid))}


@pytest.mark.e2e
@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_a_second_signal_does_not_break_the_shutdown(tmp_path):
    port, s3_base = _free_port(), S3_PORT_BASE + 20
    console = Console(tmp_path / "var", port, s3_base)
    console.start()
    try:
        pgids = console.child_pids()  # every child leads its own process group
        worker = pgids[2]
        deadline = time.monotonic() + 60
        while len(group_members(worker)) < 3 and time.monotonic() < deadline:  # main + 2 pool processes
            time.sleep(0.5)
        pool = [pid for pid in group_members(worker) if pid != worker]
        assert len(pool) == 2, group_members(worker)

        os.kill(worker, signal.SIGKILL)
        line = console.wait_for("worker started again", timeout=30)
        assert "worker exited unexpectedly (code -9); starting it again in 1 s" in "".join(console.output)
        # The dead worker's pool processes went with it; the console kept serving.
        assert [pid for pid in pool if _pid_alive(pid)] == []
        new_worker = int(re.search(r"pid (\d+)", line).group(1))
        assert _pid_alive(new_worker)
        console.login("acme-admin")
        pgids.append(new_worker)
    finally:
        console.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        code = console.stop(signal.SIGTERM)  # a second SIGTERM while stopping
    output = "".join(console.output)
    assert "Already stopping" in output and "Traceback" not in output, output
    assert code == 0, output
    assert _groups_alive(pgids) == {}
    assert not _listening(port) and not _listening(s3_base)
