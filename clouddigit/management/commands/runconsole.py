"""`manage.py runconsole`: the whole console on embedded defaults, in one terminal.

Starts one SeaweedFS S3 server per region, migrates, loads the demo data, then runs the web server,
a Celery worker and Celery beat. Prints the URL and the demo logins. A process that dies is started
again after a back-off (1, 2, 4 ... 30 s). Ctrl-C (or SIGTERM) stops every process it started, each
with its whole process group; a second Ctrl-C while stopping changes nothing. Running it again reuses
the data folder.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from clouddigit.backends.objectstore import ObjectStore
from clouddigit.backends.seaweed import SeaweedServer
from clouddigit.processes import ChildProcess


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# A crashed process waits this long before it is started again, doubling up to the maximum; one that
# ran for STABLE_SECONDS before it crashed starts again from the first delay.
FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
STABLE_SECONDS = 60.0
# What a crashed process left in its group gets this long to exit before SIGKILL.
CRASH_CLEANUP_GRACE = 5.0


@dataclass
class Supervised:
    """A child process, and when it is due to start again after a crash."""

    process: ChildProcess | SeaweedServer
    started_at: float
    delay: float = FIRST_RESTART_DELAY
    restart_at: float | None = None


def _embedded_s3(region: dict) -> bool:
    """The region uses the embedded SeaweedFS unless its S3 endpoint was pointed elsewhere."""
    return region["s3_endpoint"] == f"http://127.0.0.1:{region['embedded_s3_port_base']}"


class Command(BaseCommand):
    help = "Run the console with its workers and backends on embedded defaults (Ctrl-C stops all)."

    def add_arguments(self, parser):
        parser.add_argument("--no-demo", action="store_true", help="do not load the demo data")

    def handle(self, *args, no_demo: bool = False, **options):
        host, port = settings.CONSOLE_HOST, settings.CONSOLE_PORT
        if _port_in_use(host, port):
            raise CommandError(
                f"{host}:{port} is already in use: is the console already running? "
                "Stop it, or choose another port with CLOUDDIGIT_PORT."
            )
        log_dir = settings.VAR_DIR / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[Supervised] = []
        self._stopping = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self._start_object_stores()
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("Database migrated.")
            if not settings.DEBUG:
                # Production serves the hashed copies in STATIC_ROOT (see settings): refresh them.
                call_command("collectstatic", interactive=False, verbosity=0)
            if not no_demo:
                call_command("demo", stdout=self.stdout)
            self._start_workers_and_web(host, port, log_dir)
            self._announce(host, port, log_dir)
            self._watch()
        except KeyboardInterrupt:
            pass
        finally:
            self._stop_all()

    def _on_signal(self, signum, frame):
        if self._stopping:
            # Written straight to the file descriptor: the interrupted code may be inside a write.
            os.write(sys.stdout.fileno(), b"Already stopping: waiting for the processes to exit.\n")
            return
        self._stopping = True
        raise KeyboardInterrupt

    def _start(self, process: ChildProcess | SeaweedServer) -> None:
        process.start()
        self.children.append(Supervised(process, started_at=time.monotonic()))

    def _start_object_stores(self) -> None:
        servers = []
        for region in settings.REGIONS.values():
            if not _embedded_s3(region):
                self.stdout.write(f"{region['slug']}: using the S3 endpoint {region['s3_endpoint']}")
                continue
            server = SeaweedServer(
                data_dir=Path(region["embedded_s3_dir"]),
                port_base=region["embedded_s3_port_base"],
                access_key=region["s3_access_key"],
                secret_key=region["s3_secret_key"],
                log_path=settings.VAR_DIR / "logs" / f"s3-{region['slug']}.log",
            )
            server.name = f"s3-{region['slug']}"
            self._start(server)
            servers.append(server)
        for server in servers:
            server.wait_ready(timeout=30)
        for region in settings.REGIONS.values():
            ObjectStore.for_region(region).ensure_bucket()
            self.stdout.write(
                f"{region['slug']}: S3 at {region['s3_endpoint']}, bucket {region['s3_bucket']}"
            )

    def _start_workers_and_web(self, host: str, port: int, log_dir: Path) -> None:
        python = sys.executable
        queues = ",".join(queue.name for queue in settings.CELERY_TASK_QUEUES)
        commands = {
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "clouddigit.celery",
                "worker",
                "-Q",
                queues,
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
                "--hostname",
                "console@%h",
            ],
            "beat": [
                python,
                "-m",
                "celery",
                "-A",
                "clouddigit.celery",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                settings.CELERY_BEAT_SCHEDULE_FILENAME,
            ],
            "web": [
                python,
                "-m",
                "gunicorn",
                "clouddigit.wsgi:application",
                "--bind",
                f"{host}:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--access-logfile",
                "-",
            ],
        }
        for name, command in commands.items():
            self._start(ChildProcess(name, command, log_dir / f"{name}.log"))
        deadline = time.monotonic() + 30
        while not _port_in_use(host, port):
            self._supervise()
            if time.monotonic() > deadline:
                raise CommandError(
                    f"The web server did not listen on {host}:{port} within 30 s; see {log_dir}/web.log"
                )
            time.sleep(0.2)

    def _announce(self, host: str, port: int, log_dir: Path) -> None:
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Cloud Digit console is running at http://{host}:{port}/"))
        self.stdout.write(f"Data folder: {settings.VAR_DIR}   Logs: {log_dir}")
        self.stdout.write(
            "Processes: " + ", ".join(f"{c.process.name} (pid {c.process.pid})" for c in self.children)
        )
        if settings.DEBUG:
            self.stdout.write(
                self.style.WARNING("DEBUG mode: error pages show settings and code; never let others use it.")
            )
        self.stdout.write("Press Ctrl-C to stop them all.")
        self.stdout.flush()

    def _watch(self) -> None:
        while True:
            self._supervise()
            time.sleep(0.5)

    def _supervise(self) -> None:
        """Start again, after its back-off, each process that has died."""
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if child.restart_at is None:
                if process.is_running():
                    continue
                if now - child.started_at >= STABLE_SECONDS:
                    child.delay = FIRST_RESTART_DELAY
                # Its pool processes, or a qemu-img it started, may have outlived it.
                process.stop(CRASH_CLEANUP_GRACE)
                code = process.process.returncode if process.process else None
                child.restart_at = time.monotonic() + child.delay
                self.stdout.write(
                    self.style.ERROR(
                        f"{process.name} exited unexpectedly (code {code}); "
                        f"starting it again in {child.delay:g} s. See {process.log_path}"
                    )
                )
                self.stdout.flush()
            elif now >= child.restart_at:
                child.restart_at = None
                child.started_at = now
                child.delay = min(child.delay * 2, MAX_RESTART_DELAY)
                try:
                    process.start()
                except Exception as error:  # a port still held, a missing binary: try again later
                    self.stdout.write(self.style.ERROR(f"{process.name} could not start: {error}"))
                    continue
                self.stdout.write(f"{process.name} started again (pid {process.pid}).")
                self.stdout.flush()

    def _stop_all(self) -> None:
        """The console's own processes first, newest first (the worker finishes its task while the object
        stores still answer), then the object stores all at once: each takes seconds to stop and none
        waits on another."""
        self._stopping = True
        processes = [child.process for child in reversed(self.children)]
        for process in processes:
            if not isinstance(process, SeaweedServer):
                process.stop()
        stores = [process for process in processes if isinstance(process, SeaweedServer)]
        with ThreadPoolExecutor(max_workers=max(len(stores), 1)) as pool:
            list(pool.map(lambda store: store.stop(), stores))
        if self.children:
            self.stdout.write("Stopped: " + ", ".join(child.process.name for child in self.children))
