"""Where the CLI finds the console and its token, and what it says when it cannot use them."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from clouddigit.cli.client import config_path

SCRIPT = Path(sys.executable).parent / "clouddigit"


@pytest.mark.django_db(transaction=True)
def test_login_writes_a_private_config_that_the_installed_script_uses(live_server, alice, make_vm, prod):
    vm = make_vm(prod, "db-01")
    env = {name: value for name, value in os.environ.items() if not name.startswith("CLOUDDIGIT_")}

    def clouddigit(*argv: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [SCRIPT, *argv], input=stdin, capture_output=True, text=True, env=env, timeout=30, check=False
        )

    login = clouddigit(
        "login", "--url", live_server.url, "--username", "alice", "--password-stdin", stdin="alice-pass\n"
    )

    assert login.returncode == 0, login.stderr
    path = config_path()
    assert login.stdout == f"Logged in to {live_server.url} as alice; wrote {path}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = Token.objects.get(user=alice).key
    assert json.loads(path.read_text()) == {"url": live_server.url, "token": token}
    listed = clouddigit("compute", "vm", "list", "-o", "id")
    assert (listed.returncode, listed.stdout) == (0, f"{vm.id}\n")


@pytest.mark.django_db(transaction=True)
def test_login_asks_for_what_is_missing(run, live_server, alice, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt: "alice")
    monkeypatch.setattr("getpass.getpass", lambda prompt: "alice-pass")

    result = run("login", "--url", live_server.url)

    assert result.code == 0, result.err
    assert json.loads(config_path().read_text())["url"] == live_server.url


@pytest.mark.django_db(transaction=True)
def test_login_with_a_bad_password_writes_nothing(run, live_server, alice, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("wrong\n"))

    result = run("login", "--url", live_server.url, "--username", "alice", "--password-stdin")

    assert (result.code, result.err) == (
        1,
        "ERROR: InvalidRequest: Unable to log in with provided credentials.\n",
    )
    assert not config_path().exists()


def test_without_a_token_it_says_how_to_get_one(run):
    result = run("compute", "vm", "list")

    assert result.code == 1
    assert result.err == (
        "ERROR: NotAuthenticated: no API token found: run clouddigit login or set CLOUDDIGIT_TOKEN\n"
    )


@pytest.mark.django_db(transaction=True)
def test_a_bad_token_is_the_apis_error(run, live_server):
    result = run("compute", "vm", "list", url=live_server.url, token="0" * 40)

    assert (result.code, result.err) == (1, "ERROR: NotAuthenticated: Invalid token.\n")


def test_an_unreachable_console_is_a_connection_failure(run):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    result = run("compute", "vm", "list", url=url, token="t")

    assert result.code == 1
    assert result.err.startswith(f"ERROR: ConnectionFailed: cannot reach {url}: ")
    assert result.err.endswith("(is the console running? set CLOUDDIGIT_URL or run clouddigit login)\n")


@pytest.mark.django_db(transaction=True)
def test_an_error_without_a_json_body_reports_the_http_status(run, live_server):
    url = f"{live_server.url}/not-the-console"

    result = run("compute", "vm", "list", url=url, token="t")

    assert (result.code, result.err) == (
        1,
        f"ERROR: HTTP404: Not Found (GET {url}/api/v1/compute/vms/)\n",
    )
