"""Run `clouddigit` in-process as a user with a real API token: `cli` hands its HTTP requests to the Django
app in the test's own transaction (no server, no `transaction=True`); `live_cli` sends them over real HTTP
to pytest-django's live server, for the few tests of the wire itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import requests
import requests.adapters
from django.test import Client as DjangoClient

from clouddigit.cli.client import Client
from clouddigit.cli.main import main

IN_PROCESS_URL = "http://testserver"


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
def committed(django_capture_on_commit_callbacks):
    """`with committed(): ...` runs what the services called in it queue on commit, as a request does."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


class DjangoTransport(requests.adapters.BaseAdapter):
    """Answers the CLI's requests from the Django app through its test client. Each request is followed
    by what its commit would have run (queued tasks run eagerly), as on a server."""

    def __init__(self, capture_on_commit):
        super().__init__()
        self.django = DjangoClient()
        self.capture_on_commit = capture_on_commit

    def send(self, request: requests.PreparedRequest, **kwargs) -> requests.Response:
        body = request.body or b""
        if not isinstance(body, bytes | str):
            body = b"".join(body)  # an upload's file, sent in chunks over HTTP
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in {"content-type", "content-length"}
        }
        with self.capture_on_commit(execute=True):
            answer = self.django.generic(
                request.method,
                request.url,
                data=body,
                content_type=request.headers.get("Content-Type", ""),
                headers=headers,
            )
        response = requests.Response()
        response.status_code = answer.status_code
        response.reason = answer.reason_phrase
        response.headers = requests.structures.CaseInsensitiveDict(answer.items())
        response._content = b"".join(answer.streaming_content) if answer.streaming else answer.content
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        pass


def _as_user(run, url: str) -> Callable[..., Result]:
    from rest_framework.authtoken.models import Token

    def run_as(user, *argv: str) -> Result:
        token = Token.objects.get_or_create(user=user)[0].key if user is not None else None
        return run(*argv, url=url, token=token)

    return run_as


@pytest.fixture
def cli(run, db, monkeypatch, django_capture_on_commit_callbacks) -> Callable[..., Result]:
    """`cli(user, *argv)`: `clouddigit *argv` as `user` (None: without a token), answered in-process."""
    monkeypatch.setattr(Client, "transport", DjangoTransport(django_capture_on_commit_callbacks))
    return _as_user(run, IN_PROCESS_URL)


@pytest.fixture
def live_cli(run, live_server) -> Callable[..., Result]:
    """`live_cli(user, *argv)`: as `cli`, over real HTTP to the live server (needs transaction=True)."""
    return _as_user(run, live_server.url)
