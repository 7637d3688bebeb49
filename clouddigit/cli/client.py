"""Where the console is, who we are (config file and environment), and the HTTP calls to its REST API."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_SECONDS = 30
# After the last byte of an upload, the console inspects the file's headers before it answers.
UPLOAD_ANSWER_SECONDS = 300
API_PREFIX = "/api/v1/"


class CLIError(Exception):
    """Printed as `ERROR: <code>: <message>` (then `hint: <hint>`, when there is one); the command exits 1."""

    def __init__(self, code: str, message: str, hint: str = ""):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.hint = hint


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "clouddigit" / "config.json"


def read_config() -> dict[str, str]:
    path = config_path()
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CLIError("BadConfig", f"cannot read {path}: {error}") from None
    if not isinstance(config, dict):
        raise CLIError("BadConfig", f"{path} does not hold a JSON object")
    return config


def write_config(*, url: str, token: str) -> Path:
    """The token is a password: the file is readable by its owner only."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump({"url": url, "token": token}, file, indent=2)
        file.write("\n")
    # os.open's mode only applies to a new file; an older file may have been created more open.
    path.chmod(0o600)
    return path


def configured_url() -> str:
    return (os.environ.get("CLOUDDIGIT_URL") or read_config().get("url") or DEFAULT_URL).rstrip("/")


def configured_token() -> str:
    token = os.environ.get("CLOUDDIGIT_TOKEN") or read_config().get("token")
    if not token:
        raise CLIError("NotAuthenticated", "no API token found: run clouddigit login or set CLOUDDIGIT_TOKEN")
    return token


def _connection_reason(error: requests.RequestException) -> str:
    # urllib3 wraps the cause ("Connection refused", "Failed to resolve ...") in a MaxRetryError whose text
    # repeats the pool and URL; keep the cause's readable part.
    cause = getattr(error.args[0], "reason", None) if error.args else None
    return str(cause or error).split(": ", 1)[-1]


def _error_from(response: requests.Response) -> CLIError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "code" in body and "message" in body:
        return CLIError(str(body["code"]), str(body["message"]))
    request = response.request
    return CLIError(f"HTTP{response.status_code}", f"{response.reason} ({request.method} {request.url})")


class Client:
    """One console: a base URL and (except to log in) a token."""

    # How requests reach the console: None is HTTP. Tests set an adapter that hands each request to the
    # Django app in the test's own process and transaction (tests/cli/conftest.py).
    transport: requests.adapters.BaseAdapter | None = None

    def __init__(self, url: str, token: str | None = None):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        if self.transport is not None:
            self.session.mount(f"{self.url}/", self.transport)
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers["Authorization"] = f"Token {token}"

    @classmethod
    def from_environment(cls) -> Client:
        return cls(configured_url(), configured_token())

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        timeout = kwargs.setdefault("timeout", TIMEOUT_SECONDS)
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.ConnectionError as error:
            raise CLIError(
                "ConnectionFailed",
                f"cannot reach {self.url}: {_connection_reason(error)} "
                "(is the console running? set CLOUDDIGIT_URL or run clouddigit login)",
            ) from None
        except requests.Timeout:
            seconds = timeout[1] if isinstance(timeout, tuple) else timeout  # (connect, answer)
            raise CLIError("Timeout", f"{self.url} did not answer within {seconds} s") from None
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def _json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise CLIError(
                "BadResponse",
                f"{response.request.url} did not answer JSON: is {self.url} the console's address?",
            ) from None

    def api_url(self, path: str) -> str:
        return f"{self.url}{API_PREFIX}{path}"

    def list_all(self, path: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every item of a paginated list: follows `next` until the last page."""
        page = self._json(self._request("GET", self.api_url(path), params=params))
        items = list(page["results"])
        while page["next"]:
            page = self._json(self._request("GET", page["next"]))
            items.extend(page["results"])
        return items

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """The JSON answer: an object, or a list where the API does not paginate (`why-missing/`)."""
        return self._json(self._request("GET", self.api_url(path), params=params))

    def get_text(self, path: str, accept: str) -> str:
        """A body that is not JSON (e.g. a policy's YAML); errors still come back as JSON."""
        headers = {"Accept": f"{accept}, application/json"}
        return self._request("GET", self.api_url(path), headers=headers).text

    def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST: a create, or an action on an object (`compute/snapshots/<id>/restore/`)."""
        return self._json(self._request("POST", self.api_url(path), json=body))

    def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT: set the whole of a resource (a project's image policy)."""
        return self._json(self._request("PUT", self.api_url(path), json=body))

    def update(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH: change part of a resource (a VM's tags)."""
        return self._json(self._request("PATCH", self.api_url(path), json=body))

    def delete(self, path: str) -> dict[str, Any] | None:
        """The deleted object when the API answers one (a delete that goes on in the background)."""
        response = self._request("DELETE", self.api_url(path))
        return self._json(response) if response.content else None

    def on_this_console(self, url: str) -> str:
        """An API address the console answered (e.g. an image's upload_url), on the console we were told
        to use: behind a proxy the console may name itself differently, and the token goes nowhere else."""
        _, found, path = urlsplit(url).path.partition(API_PREFIX)
        if not found:
            raise CLIError("BadResponse", f"{url} is not an address of the console's API")
        return self.api_url(path)

    def upload(self, url: str, body: Iterable[bytes], length: int) -> dict[str, Any]:
        """PUT `length` bytes as the raw request body, sent as `body` yields them (never all in memory)."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        response = self._request(
            "PUT",
            self.on_this_console(url),
            data=body,
            headers=headers,
            timeout=(TIMEOUT_SECONDS, UPLOAD_ANSWER_SECONDS),
        )
        return self._json(response)

    def obtain_token(self, *, username: str, password: str) -> str:
        answer = self.create("auth/token/", {"username": username, "password": password})
        return answer["token"]
