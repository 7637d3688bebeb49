"""A real S3 server for the tests: one SeaweedFS `weed mini` per test session, on loopback.

Ports: CLOUDDIGIT_TEST_S3_PORT_BASE (default 19300, clear of the console's 18300 and 18310) and the
nine after it, plus base+10004 (see clouddigit/backends/seaweed.py). Tests that start a second
server of their own use `seaweed.port_base + PORTS_PER_SERVER`. Under pytest-xdist each worker
shifts the base by 20.

A missing `weed` binary fails the tests that need it, it does not skip them: the suite must never
pass without having talked to a real S3 server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from clouddigit.backends.objectstore import ObjectStore
from clouddigit.backends.seaweed import PORTS_PER_SERVER, SeaweedError, SeaweedServer
from tests.plugins.parallel import worker_index

DEFAULT_TEST_PORT_BASE = 19300
ACCESS_KEY = "clouddigit-test"
SECRET_KEY = "clouddigit-test-secret"


@dataclass
class SeaweedForTests:
    server: SeaweedServer

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def access_key(self) -> str:
        return self.server.access_key

    @property
    def secret_key(self) -> str:
        return self.server.secret_key

    @property
    def port_base(self) -> int:
        return self.server.port_base

    @staticmethod
    def bucket_name() -> str:
        return f"test-{uuid.uuid4().hex[:16]}"

    def store(self, bucket: str | None = None, **options: Any) -> ObjectStore:
        """An ObjectStore on a bucket that exists: a fresh one unless `bucket` is given."""
        store = ObjectStore(
            self.endpoint, self.access_key, self.secret_key, bucket or self.bucket_name(), **options
        )
        store.ensure_bucket()
        return store


def _port_base() -> int:
    base = int(os.environ.get("CLOUDDIGIT_TEST_S3_PORT_BASE", DEFAULT_TEST_PORT_BASE))
    return base + 2 * PORTS_PER_SERVER * worker_index()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedForTests]:
    server: SeaweedServer | None = None
    failure = None
    try:
        server = SeaweedServer(
            data_dir=tmp_path_factory.mktemp("seaweed"),
            port_base=_port_base(),
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
        )
        server.start()
        server.wait_ready(timeout=30)
    except SeaweedError as error:
        failure = f"the test S3 server did not start: {error}"
    if failure is not None or server is None:
        if server is not None:
            server.stop()
        pytest.fail(failure or "the test S3 server did not start", pytrace=False)
    try:
        yield SeaweedForTests(server)
    finally:
        # Its data folder is thrown away: no need to wait out weed mini's graceful shutdown, which takes
        # 11 s once the server has run for a while (mini waits 10 s for its admin server to stop).
        server.stop(timeout=1)
