"""Run `clouddigit` in-process against a live server, as a user with a real API token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from clouddigit.cli.main import main


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch, tmp_path):
    """Never read or write the developer's own config, token or URL."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CLOUDDIGIT_URL", raising=False)
    monkeypatch.delenv("CLOUDDIGIT_TOKEN", raising=False)


@pytest.fixture
def run(monkeypatch, capsys) -> Callable[..., Result]:
    """`run(*argv, url=..., token=...)`: the exit code and what the command printed."""

    def run_command(*argv: str, url: str | None = None, token: str | None = None) -> Result:
        for name, value in (("CLOUDDIGIT_URL", url), ("CLOUDDIGIT_TOKEN", token)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run_command


@pytest.fixture
def cli(run, live_server) -> Callable[..., Result]:
    """`cli(user, *argv)`: `clouddigit *argv` as `user` (None: without a token) against the live server."""
    from rest_framework.authtoken.models import Token

    def run_as(user, *argv: str) -> Result:
        token = Token.objects.get_or_create(user=user)[0].key if user is not None else None
        return run(*argv, url=live_server.url, token=token)

    return run_as
