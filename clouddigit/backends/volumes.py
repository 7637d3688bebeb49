"""qcow2 volume files, driven through qemu-img and qemu-io.

Plain functions taking paths, so Celery tasks and tests call them alike. Every command names the
image format explicitly (-f, -F, -O, driver=): letting qemu probe it is a security hole, because a raw
guest disk whose first sector holds a qcow2 header would be opened as qcow2 with the backing file the
guest chose. Paths are passed to qemu as absolute paths, so a name like "nbd:x" or "json:{...}" can
never be read as a protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Metadata commands answer in milliseconds; only whole-volume copies and comparisons take long.
COMMAND_TIMEOUT_SECONDS = 60
COPY_TIMEOUT_SECONDS = 6 * 3600

# qemu addresses guest bytes in 512-byte sectors: its raw driver only windows whole sectors.
SECTOR_BYTES = 512

CHECKSUM_CHUNK_BYTES = 1024 * 1024
_ZERO_CHUNK_DIGEST = hashlib.sha256(bytes(CHECKSUM_CHUNK_BYTES)).digest()
# Bounds the scratch file (and each qemu-img run) when checksumming a volume full of data.
_CHECKSUM_WINDOW_CHUNKS = 256
# Bounds memory when hashing long runs of zero chunks (32 bytes of digest per chunk).
_ZERO_DIGEST_BATCH = 4096


class VolumeError(Exception):
    """A qemu-img/qemu-io command failed; the message holds the command and qemu's own words."""


def create(path: str | os.PathLike[str], size_bytes: int) -> None:
    """Create an empty qcow2 volume of `size_bytes` (qemu rounds up to 512), with parent folders."""
    path = _claim(path)
    # "--" so that a negative size gets qemu's "Invalid image size" rather than "unrecognized option".
    _run_creating(path, ["qemu-img", "create", "-q", "-f", "qcow2", "--", str(path), str(size_bytes)])


def create_overlay(
    path: str | os.PathLike[str], backing_path: str | os.PathLike[str], backing_format: str = "qcow2"
) -> None:
    """Create a qcow2 overlay on `backing_path`: redirect-on-write, so it takes the same few
    milliseconds whatever the size of the base. The backing path is stored absolute so the chain
    resolves from any working directory."""
    path = _claim(path)
    backing = Path(backing_path).resolve()
    _run_creating(
        path,
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", backing_format, str(path)],
    )


def _share(force_share: bool) -> list[str]:
    # -U reads a file that a running qemu holds write-locked. What it reads of an active file is not a
    # point in time, so it serves metadata and size estimates, never a snapshot's checksum.
    return ["-U"] if force_share else []


def info(path: str | os.PathLike[str], fmt: str = "qcow2", force_share: bool = False) -> dict[str, Any]:
    """`qemu-img info` of the image itself (virtual-size, actual-size, backing-filename, ...)."""
    args = ["qemu-img", "info", *_share(force_share), "--output=json", "-f", fmt, _absolute(path)]
    return json.loads(_run(args).stdout)


def backing_chain(
    path: str | os.PathLike[str], fmt: str = "qcow2", force_share: bool = False
) -> list[dict[str, Any]]:
    """`qemu-img info` of every layer, the image first and the bottom-most base last."""
    args = [
        "qemu-img",
        "info",
        *_share(force_share),
        "--output=json",
        "--backing-chain",
        "-f",
        fmt,
        _absolute(path),
    ]
    return json.loads(_run(args).stdout)


def map(path: str | os.PathLike[str], fmt: str = "qcow2", force_share: bool = False) -> list[dict[str, Any]]:
    """`qemu-img map` of the guest view through the whole chain: sorted extents with start, length,
    depth (0 = this layer), zero (reads as zeros) and data (holds bytes)."""
    args = ["qemu-img", "map", *_share(force_share), "--output=json", "-f", fmt, _absolute(path)]
    return json.loads(_run(args).stdout)


def convert(
    src: str | os.PathLike[str], src_format: str, dst: str | os.PathLike[str], dst_format: str = "qcow2"
) -> None:
    """Copy the guest view of `src` (its whole chain) into a new standalone image `dst`."""
    dst = _claim(dst)
    _run_creating(
        dst,
        ["qemu-img", "convert", "-f", src_format, "-O", dst_format, _absolute(src), str(dst)],
        timeout=COPY_TIMEOUT_SECONDS,
    )


def grow(path: str | os.PathLike[str], size_bytes: int) -> None:
    """Grow a standalone qcow2 file's guest size to `size_bytes` (never shrinks: that loses data)."""
    if info(path)["virtual-size"] < size_bytes:
        _run(["qemu-img", "resize", "-q", "-f", "qcow2", _absolute(path), str(size_bytes)])


def rebase(
    path: str | os.PathLike[str], backing_path: str | os.PathLike[str] | None, backing_format: str = "qcow2"
) -> None:
    """Point `path` at a new backing file (None: no backing file), first copying into `path` every
    cluster whose content would otherwise change (qemu-img's safe mode). This is how a snapshot layer
    is merged away: each of its children is rebased onto the layer's own parent. Running it again
    after an interruption is harmless."""
    if backing_path is None:
        args = ["qemu-img", "rebase", "-q", "-f", "qcow2", "-b", "", _absolute(path)]
    else:
        backing = str(Path(backing_path).resolve())
        args = [
            "qemu-img",
            "rebase",
            "-q",
            "-f",
            "qcow2",
            "-b",
            backing,
            "-F",
            backing_format,
            _absolute(path),
        ]
    _run(args, timeout=COPY_TIMEOUT_SECONDS)


def compare(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    a_format: str = "qcow2",
    b_format: str = "qcow2",
) -> bool:
    """True when both guest views hold the same bytes (a shorter image counts as zero-padded)."""
    args = ["qemu-img", "compare", "-q", "-f", a_format, "-F", b_format, _absolute(a), _absolute(b)]
    # Exit status 1 is qemu's answer "the images differ"; 2 and above are errors.
    result = _run(args, timeout=COPY_TIMEOUT_SECONDS, ok_codes=(0, 1))
    return result.returncode == 0


def checksum(path: str | os.PathLike[str], fmt: str = "qcow2") -> str:
    """SHA-256 identity of the guest-visible bytes, whatever the chain layering or allocation.

    Definition: hex SHA-256 over the concatenated 32-byte SHA-256 digests of the guest view cut into
    1 MiB chunks (the last chunk is shorter when the size is not a whole number of MiB). A volume,
    its flattened copy and an overlay restored to the same bytes therefore agree.

    Chunks that `qemu-img map` reports as reading zeros get a precomputed digest without being read;
    the others are read through qemu (it resolves the chain, compression and zero clusters), a window
    at a time into a scratch file, so a 100 GiB volume with a few MiB written takes well under a second.
    """
    size = info(path, fmt)["virtual-size"]
    chunk_count = -(-size // CHECKSUM_CHUNK_BYTES)
    total = hashlib.sha256()
    hashed_chunks = 0
    with tempfile.TemporaryDirectory(prefix="clouddigit-checksum-") as scratch_dir:
        scratch = Path(scratch_dir) / "window.raw"
        for first, end in _data_chunk_runs(map(path, fmt)):
            for digests in _zero_chunk_digests(hashed_chunks, first, size):
                total.update(digests)
            for window_first in range(first, end, _CHECKSUM_WINDOW_CHUNKS):
                window_end = min(window_first + _CHECKSUM_WINDOW_CHUNKS, end)
                offset = window_first * CHECKSUM_CHUNK_BYTES
                length = min(window_end * CHECKSUM_CHUNK_BYTES, size) - offset
                _export_range(path, fmt, offset, length, scratch)
                with scratch.open("rb") as window:
                    while chunk := window.read(CHECKSUM_CHUNK_BYTES):
                        total.update(hashlib.sha256(chunk).digest())
            hashed_chunks = end
        for digests in _zero_chunk_digests(hashed_chunks, chunk_count, size):
            total.update(digests)
    return total.hexdigest()


def read_bytes(path: str | os.PathLike[str], offset: int, length: int, fmt: str = "qcow2") -> bytes:
    """Guest bytes [offset, offset + length) as the chain presents them."""
    start = offset - offset % SECTOR_BYTES
    end = -(-(offset + length) // SECTOR_BYTES) * SECTOR_BYTES
    with tempfile.TemporaryDirectory(prefix="clouddigit-read-") as scratch_dir:
        scratch = Path(scratch_dir) / "range.raw"
        _export_range(path, fmt, start, end - start, scratch)
        sectors = scratch.read_bytes()
    return sectors[offset - start : offset - start + length]


def write_pattern(
    path: str | os.PathLike[str], offset: int, length: int, pattern: int, fmt: str = "qcow2"
) -> None:
    """Fill guest bytes [offset, offset + length) with the byte `pattern` (test data)."""
    _run(["qemu-io", "-f", fmt, "-c", f"write -q -P {pattern} {offset} {length}", _absolute(path)])


def write_bytes(path: str | os.PathLike[str], offset: int, data: bytes, fmt: str = "qcow2") -> None:
    """Write `data` at guest `offset`. qemu-io reads it from stdin, so no temp file is needed."""
    _run(
        ["qemu-io", "-f", fmt, "-c", f"write -q -s /dev/stdin {offset} {len(data)}", _absolute(path)],
        stdin=data,
    )


def _export_range(path: str | os.PathLike[str], fmt: str, offset: int, length: int, dst: Path) -> None:
    """Copy guest bytes [offset, offset + length) into the raw file `dst` (overwritten).

    qemu's raw driver with offset/size, stacked on the volume's format driver, presents just that
    window of the guest view, so qemu-img convert reads nothing else. The length must be whole sectors.
    """
    # --image-opts escapes a comma in a value by doubling it.
    filename = _absolute(path).replace(",", ",,")
    options = (
        f"driver=raw,offset={offset},size={length},"
        f"file.driver={fmt},file.file.driver=file,file.file.filename={filename}"
    )
    _run(["qemu-img", "convert", "--image-opts", options, "-O", "raw", str(dst)])


def _data_chunk_runs(extents: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Merged [first, end) checksum-chunk ranges touching any extent that may not read as zeros."""
    runs: list[tuple[int, int]] = []
    for extent in extents:
        if extent["zero"]:
            continue
        first = extent["start"] // CHECKSUM_CHUNK_BYTES
        end = -(-(extent["start"] + extent["length"]) // CHECKSUM_CHUNK_BYTES)
        if runs and first <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], end))
        else:
            runs.append((first, end))
    return runs


def _zero_chunk_digests(first: int, end: int, size: int) -> Iterator[bytes]:
    """Concatenated digests of the all-zero chunks [first, end) of a volume of `size` bytes."""
    full_end = min(end, size // CHECKSUM_CHUNK_BYTES)
    for batch_first in range(first, full_end, _ZERO_DIGEST_BATCH):
        batch_end = min(batch_first + _ZERO_DIGEST_BATCH, full_end)
        yield _ZERO_CHUNK_DIGEST * (batch_end - batch_first)
    if first <= full_end < end:
        # The volume's last chunk, shorter than a full chunk.
        yield hashlib.sha256(bytes(size - full_end * CHECKSUM_CHUNK_BYTES)).digest()


def _absolute(path: str | os.PathLike[str]) -> str:
    return str(Path(path).absolute())


def _claim(path: str | os.PathLike[str]) -> Path:
    """Create `path` as an empty file, failing if it exists: qemu-img itself would overwrite it.

    Exclusive creation also stops two workers that run the same task from racing for one file.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        raise VolumeError(f"{path} already exists; refusing to overwrite it") from None
    return path


def _run_creating(path: Path, args: list[str], timeout: float = COMMAND_TIMEOUT_SECONDS) -> None:
    """Run a command that fills the claimed `path`; on failure remove it, so nothing half-made stays."""
    try:
        _run(args, timeout=timeout)
    except VolumeError:
        path.unlink(missing_ok=True)
        raise


def _run(
    args: list[str],
    timeout: float = COMMAND_TIMEOUT_SECONDS,
    stdin: bytes | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> subprocess.CompletedProcess[bytes]:
    """Run a qemu tool; any other exit status becomes a VolumeError carrying what qemu said."""
    command = shlex.join(args)
    try:
        result = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise VolumeError(f"{command} timed out after {timeout:g} s") from None
    if result.returncode not in ok_codes:
        # qemu-img reports on stderr, qemu-io on stdout ("write failed: ...").
        detail = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise VolumeError(f"{command} failed (exit {result.returncode}): {detail}")
    return result
