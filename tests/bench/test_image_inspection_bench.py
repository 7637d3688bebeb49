"""Inspection + checksum of a 2 GiB upload, printed as name=value lines.

- throughput of `inspect()` + `sha256_of()` next to `sha256sum` of the same file in the same run
  (both read a file the write just left in the page cache, so the ratio compares hashing, not the disk;
  hashlib hashes through OpenSSL, Debian's coreutils sha256sum with its own slower code)
- peak memory of that path in a child process for 256 MiB and 2 GiB: it must stay flat
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from images.inspection import inspect, sha256_of

MiB, GiB = 2**20, 2**30
PROJECT = Path(__file__).resolve().parents[2]

# The child reports its own peak. Not ru_maxrss: Linux keeps it across fork and exec, so a child of this
# pytest process reports pytest's ~130 MiB; VmHWM belongs to the child's own address space.
CHILD = """\
import sys
from images.inspection import inspect, sha256_of
verdict = inspect(sys.argv[1])
sha256_of(sys.argv[1])
assert verdict.safe, verdict
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def _write(path: Path, size: int) -> None:
    # Real bytes, not a sparse file, so every read below really reads; random so no format matches.
    block = os.urandom(MiB)
    with open(path, "wb") as file:
        for _ in range(size // MiB):
            file.write(block)


def _peak_kib(path: Path) -> int:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], cwd=PROJECT, check=True, capture_output=True, text=True
    )
    return int(result.stdout)


@pytest.mark.bench
def test_inspection_and_checksum_of_a_2_gib_upload(tmp_path, capsys):
    small, large = tmp_path / "upload-256m.raw", tmp_path / "upload-2g.raw"
    try:
        _write(small, 256 * MiB)
        _write(large, 2 * GiB)

        started = time.perf_counter()
        result = subprocess.run(["sha256sum", str(large)], check=True, capture_output=True, text=True)
        sha256sum_seconds = time.perf_counter() - started

        started = time.perf_counter()
        verdict = inspect(large, declared_format="raw")
        inspect_seconds = time.perf_counter() - started
        digest = sha256_of(large)
        ours_seconds = time.perf_counter() - started

        peak_small, peak_large = _peak_kib(small), _peak_kib(large)
    finally:
        small.unlink(missing_ok=True)
        large.unlink(missing_ok=True)

    with capsys.disabled():
        print()
        print(f"image_upload_bytes={2 * GiB}")
        print(f"image_inspect_ms={inspect_seconds * 1000:.2f}")
        print(f"sha256sum_mib_per_s={2 * GiB / MiB / sha256sum_seconds:.0f}")
        print(f"image_inspect_sha256_mib_per_s={2 * GiB / MiB / ours_seconds:.0f}")
        print(f"image_inspect_sha256_to_sha256sum_throughput_ratio={sha256sum_seconds / ours_seconds:.2f}")
        print(f"image_inspect_sha256_peak_rss_256m_mib={peak_small / 1024:.1f}")
        print(f"image_inspect_sha256_peak_rss_2g_mib={peak_large / 1024:.1f}")
    assert verdict.safe and verdict.format == "raw" and verdict.virtual_size == 2 * GiB
    assert digest == result.stdout.split()[0]
    # VmHWM is in KiB: memory must not grow with the file.
    assert peak_large <= peak_small + 32 * 1024
