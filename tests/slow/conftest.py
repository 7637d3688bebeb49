"""A libvirt session daemon (`qemu:///session`) running real qemu as a non-root user, for the slow
tests that drive qemu under TCG (tests/slow/test_real_qemu*.py).

libvirt's `qemu:///session` needs a non-root user (as root it wants the system daemon and systemd).
So `session` starts a session libvirtd as user `cdtest` (created when the tests run as root; the
current user otherwise) with its HOME and XDG folders in a temporary folder, and the test talks to it
from its own process over the daemon's socket, `qemu+unix:///session?socket=...`, the way a worker
talks to a remote host's libvirtd. The daemon, its virtlogd and qemu are stopped and the folder
removed at the end.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from clouddigit.backends import hypervisor
from clouddigit.backends.hypervisor import DomainSpec

TEST_USER = "cdtest"
TOOLS = ("qemu-system-x86_64", "qemu-img", "qemu-io")


@dataclass
class Session:
    uri: str
    folder: Path
    volumes: Path
    uid: int
    gid: int


def _need(condition: bool, message: str) -> None:
    if condition:
        return
    if os.environ.get("CLOUDDIGIT_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _libvirtd() -> str | None:
    return shutil.which("libvirtd") or shutil.which("libvirtd", path="/usr/sbin:/sbin")


def _test_user() -> tuple[int, int]:
    """The user that runs the session daemon: `cdtest` (created if missing) under root, else ourselves."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--create-home", "--shell", "/usr/sbin/nologin", TEST_USER], capture_output=True
        )
        # 9: made meanwhile by another xdist worker's test.
        if made.returncode not in (0, 9):
            raise AssertionError(f"useradd {TEST_USER} failed: {made.stderr.decode()}") from None
        entry = pwd.getpwnam(TEST_USER)
    return entry.pw_uid, entry.pw_gid


def _kill_pid_file(pid_file: Path, uid: int) -> None:
    """Stop the process a pid file names, if it still runs as the test user (never anyone else's)."""
    try:
        pid = int(pid_file.read_text().strip())
        if os.stat(f"/proc/{pid}").st_uid != uid:
            return
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


@pytest.fixture
def session() -> Iterator[Session]:
    daemon_binary = _libvirtd()
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    _need(
        daemon_binary is not None and not missing,
        f"real qemu needs libvirtd and {TOOLS}: run "
        "./scripts/install --test (qemu-system-x86, libvirt-daemon, libvirt-daemon-driver-qemu)",
    )
    uid, gid = _test_user()
    # Not under pytest's tmp_path: that is private to root. Short, so qemu's socket paths stay < 108.
    folder = Path(tempfile.mkdtemp(prefix="cdq-", dir="/tmp"))
    dirs = {name: folder / name for name in ("run", "home", "config", "cache", "data", "volumes")}
    for path in [folder, *dirs.values()]:
        path.mkdir(exist_ok=True)
        os.chown(path, uid, gid)
        path.chmod(0o700)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(dirs["home"]),
        "XDG_RUNTIME_DIR": str(dirs["run"]),
        "XDG_CONFIG_HOME": str(dirs["config"]),
        "XDG_CACHE_HOME": str(dirs["cache"]),
        "XDG_DATA_HOME": str(dirs["data"]),
    }
    as_user = {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 else {}
    log = (folder / "libvirtd.log").open("wb")
    # --timeout: the daemon also exits by itself once idle, should this process die before cleanup.
    daemon = subprocess.Popen(
        [daemon_binary, "--timeout=120"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **as_user,
    )
    socket = dirs["run"] / "libvirt" / "libvirt-sock"
    uri = f"qemu+unix:///session?socket={socket}"
    try:
        deadline = time.monotonic() + 20
        while not socket.exists() and daemon.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert socket.exists(), f"libvirtd did not start: {(folder / 'libvirtd.log').read_text()[-2000:]}"
        yield Session(uri, folder, dirs["volumes"], uid, gid)
    finally:
        try:
            conn = hypervisor.connection(uri)
            for dom in conn.listAllDomains():
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        except (libvirt.libvirtError, hypervisor.HypervisorError):
            pass
        hypervisor.disconnect(uri)
        daemon.terminate()
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(10)
        log.close()
        run = dirs["run"] / "libvirt"
        for pid_file in [run / "virtlogd.pid", *run.glob("qemu/run/*.pid")]:
            _kill_pid_file(pid_file, uid)
        shutil.rmtree(folder, ignore_errors=True)


def guest_write(
    uri: str, spec: DomainSpec, target: str, offset: int, length: int, pattern: int, flush: bool = False
) -> None:
    """Write into the running disk the way the guest would: through qemu's own block layer (HMP
    `qemu-io` on the virtio-blk device). Writing the active file from outside is never safe.

    `flush=True` then flushes the disk as a guest's fsync does: until then qemu may keep the qcow2
    metadata of the write in its cache, so a `qemu-img -U` of the active file does not see it yet."""
    import libvirt_qemu

    dom = hypervisor.connection(uri).lookupByUUIDString(spec.uuid)
    root = ET.fromstring(dom.XMLDesc(0))
    disk = next(d for d in root.findall("./devices/disk") if d.find("target").get("dev") == target)
    device = f"/machine/peripheral/{disk.find('alias').get('name')}/virtio-backend"
    commands = [f"write -q -P {pattern} {offset} {length}"] + (["flush"] if flush else [])
    for command in commands:
        output = libvirt_qemu.qemuMonitorCommand(
            dom, f'qemu-io -d {device} "{command}"', libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
        )
        assert output.strip() == "", output
