"""`manage.py runconsole`: the whole console on embedded defaults, in one terminal.

Starts one SeaweedFS S3 server per region, migrates, loads the demo data, then runs the web server,
a Celery worker and Celery beat. Prints the URL and the demo logins. Ctrl-C (or SIGTERM) stops every
process it started; running it again reuses the data folder.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
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
        self.children: list = []
        self._stopping = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self._start_object_stores()
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("Database migrated.")
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
        raise KeyboardInterrupt

    def _start_object_stores(self) -> None:
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
            self.children.append(server)
            server.start()
        for server in self.children:
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
                "clouddigit",
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
                "clouddigit",
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
            child = ChildProcess(name, command, log_dir / f"{name}.log")
            self.children.append(child)
            child.start()
        deadline = time.monotonic() + 30
        while not _port_in_use(host, port):
            self._check_children()
            if time.monotonic() > deadline:
                raise CommandError(
                    f"The web server did not listen on {host}:{port} within 30 s; see {log_dir}/web.log"
                )
            time.sleep(0.2)

    def _announce(self, host: str, port: int, log_dir: Path) -> None:
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Cloud Digit console is running at http://{host}:{port}/"))
        self.stdout.write(f"Data folder: {settings.VAR_DIR}   Logs: {log_dir}")
        self.stdout.write("Processes: " + ", ".join(f"{c.name} (pid {c.pid})" for c in self.children))
        self.stdout.write("Press Ctrl-C to stop them all.")
        self.stdout.flush()

    def _watch(self) -> None:
        while True:
            self._check_children()
            time.sleep(1)

    def _check_children(self) -> None:
        for child in self.children:
            if not child.is_running():
                raise CommandError(f"{child.name} exited unexpectedly; see {child.log_path}")

    def _stop_all(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in reversed(self.children):
            child.stop()
        if self.children:
            self.stdout.write("Stopped: " + ", ".join(child.name for child in self.children))
