"""The per-chain lock: writers take turns with everyone on their chain, readers share, chains are apart."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clouddigit.backends import chainlock
from clouddigit.backends.chainlock import ChainBusy


def _take_in_thread(volume_dir: Path, key: str, *, shared: bool = False, timeout: float = 10) -> dict:
    """Take the lock in another thread; the answer says when it got it (or what it raised)."""
    answer: dict = {}

    def target() -> None:
        try:
            with chainlock.held(volume_dir, key, purpose="the other job", shared=shared, timeout=timeout):
                answer["at"] = time.monotonic()
        except ChainBusy as error:
            answer["error"] = error

    answer["thread"] = threading.Thread(target=target)
    answer["thread"].start()
    return answer


def test_a_writer_waits_for_a_reader_of_its_chain_then_goes_on(tmp_path: Path) -> None:
    with chainlock.held(tmp_path, "chain-a", purpose="measuring snapshot s1", shared=True, timeout=1):
        writer = _take_in_thread(tmp_path, "chain-a")
        time.sleep(0.3)
        assert "at" not in writer  # still waiting
        released = time.monotonic()
    writer["thread"].join()

    assert "error" not in writer and writer["at"] >= released
    assert list((tmp_path / ".locks").iterdir()) == []  # the last writer leaves no file behind


def test_a_reader_waits_for_a_writer_of_its_chain(tmp_path: Path) -> None:
    with chainlock.held(tmp_path, "chain-a", purpose="deleting snapshot s1", timeout=1):
        reader = _take_in_thread(tmp_path, "chain-a", shared=True)
        time.sleep(0.3)
        released = time.monotonic()
    reader["thread"].join()

    assert reader["at"] >= released


def test_readers_of_one_chain_and_writers_of_different_chains_do_not_wait(tmp_path: Path) -> None:
    with (
        chainlock.held(tmp_path, "chain-a", purpose="measuring snapshot s1", shared=True, timeout=1),
        chainlock.held(tmp_path, "chain-b", purpose="deleting snapshot s9", timeout=1),
    ):
        started = time.monotonic()
        reader = _take_in_thread(tmp_path, "chain-a", shared=True, timeout=0.5)
        writer = _take_in_thread(tmp_path, "chain-c", timeout=0.5)
        reader["thread"].join()
        writer["thread"].join()

    assert reader["at"] - started < 0.2 and writer["at"] - started < 0.2


def test_a_wait_is_bounded_and_names_what_holds_the_chain(tmp_path: Path) -> None:
    with (
        chainlock.held(tmp_path, "chain-a", purpose="measuring snapshot s1", shared=True, timeout=1),
        chainlock.held(tmp_path, "chain-a", purpose="measuring snapshot s2", shared=True, timeout=1),
    ):
        started = time.monotonic()
        with pytest.raises(ChainBusy) as busy:
            with chainlock.held(tmp_path, "chain-a", purpose="deleting snapshot s1", timeout=0.3):
                pass
        waited = time.monotonic() - started

    message = str(busy.value)
    assert message.startswith("Volume chain busy: measuring snapshot s1 (since ")
    assert "; measuring snapshot s2 (since " in message and "Waited 0.3 s" in message
    assert 0.3 <= waited < 1
    assert list((tmp_path / ".locks").glob("*.holder")) == []  # holders say nothing once they are done


def test_a_killed_holder_frees_its_chain_and_is_not_named(tmp_path: Path) -> None:
    code = (
        "import os, signal, sys\n"
        "from clouddigit.backends import chainlock\n"
        "with chainlock.held(sys.argv[1], 'chain-a', purpose='a job that dies', timeout=1):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=Path(__file__).parents[2])
    assert result.returncode == -9
    assert len(list((tmp_path / ".locks").glob("*.holder"))) == 1  # left behind by the dead process

    with chainlock.held(tmp_path, "chain-a", purpose="deleting snapshot s1", timeout=0.1):
        with pytest.raises(ChainBusy, match="^Volume chain busy: deleting snapshot s1"):
            with chainlock.held(tmp_path, "chain-a", purpose="measuring", shared=True, timeout=0.1):
                pass
    assert list((tmp_path / ".locks").glob("*.holder")) == []
