"""Integration tests of the qemu-img/qemu-io adapter against the real tools (no mocks)."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from clouddigit.backends import volumes
from clouddigit.backends.volumes import VolumeError

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB


def sha256_of_chunk_digests(data: bytes) -> str:
    """The checksum definition, computed independently over bytes held in memory."""
    digests = b"".join(hashlib.sha256(data[i : i + MiB]).digest() for i in range(0, len(data), MiB))
    return hashlib.sha256(digests).hexdigest()


def test_create_makes_an_empty_qcow2_and_its_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "bd-dha-1" / "vol-1.qcow2"

    volumes.create(path, 64 * MiB)

    details = volumes.info(path)
    assert details["format"] == "qcow2"
    assert details["virtual-size"] == 64 * MiB
    assert "backing-filename" not in details
    assert [(e["start"], e["length"], e["zero"]) for e in volumes.map(path)] == [(0, 64 * MiB, True)]


def test_create_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "vol.qcow2"
    volumes.create(path, MiB)
    volumes.write_pattern(path, 0, 4096, 0x11)

    with pytest.raises(VolumeError, match="already exists; refusing to overwrite it"):
        volumes.create(path, 2 * MiB)

    assert volumes.info(path)["virtual-size"] == MiB
    assert volumes.read_bytes(path, 0, 4) == b"\x11" * 4


def test_create_with_a_bad_size_reports_qemu_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "vol.qcow2"

    with pytest.raises(VolumeError) as excinfo:
        volumes.create(path, -1)

    assert "qemu-img create" in str(excinfo.value)
    assert "Invalid image size specified" in str(excinfo.value)
    assert not path.exists()


def test_missing_file_error_names_the_command_and_qemus_reason(tmp_path: Path) -> None:
    missing = tmp_path / "missing.qcow2"

    with pytest.raises(VolumeError) as excinfo:
        volumes.info(missing)

    message = str(excinfo.value)
    assert message.startswith("qemu-img info ")
    assert f"Could not open '{missing}': No such file or directory" in message


def test_overlay_stores_its_base_as_an_absolute_path_with_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    volumes.create("base.qcow2", 8 * MiB)

    volumes.create_overlay("snaps/overlay.qcow2", "base.qcow2")

    chain = volumes.backing_chain(tmp_path / "snaps" / "overlay.qcow2")
    assert [Path(layer["filename"]).name for layer in chain] == ["overlay.qcow2", "base.qcow2"]
    assert chain[0]["backing-filename"] == str(tmp_path / "base.qcow2")
    assert chain[0]["backing-filename-format"] == "qcow2"
    assert chain[0]["virtual-size"] == 8 * MiB


def test_overlay_refuses_a_missing_base_and_leaves_no_file(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"

    with pytest.raises(VolumeError, match=r"qemu-img create .*No such file or directory"):
        volumes.create_overlay(overlay, tmp_path / "missing.qcow2")

    assert not overlay.exists()


def test_overlay_creation_takes_the_same_time_for_1_gib_and_10_tib_bases(tmp_path: Path) -> None:
    def fastest_overlay_seconds(base: Path) -> float:
        timings = []
        for attempt in range(3):
            started = time.perf_counter()
            volumes.create_overlay(tmp_path / f"{base.stem}-snap-{attempt}.qcow2", base)
            timings.append(time.perf_counter() - started)
        return min(timings)

    small, huge = tmp_path / "small.qcow2", tmp_path / "huge.qcow2"
    volumes.create(small, GiB)
    volumes.create(huge, 10 * TiB)
    volumes.write_pattern(small, 0, MiB, 0x01)
    volumes.write_pattern(huge, 9 * TiB, MiB, 0x01)

    small_seconds = fastest_overlay_seconds(small)
    huge_seconds = fastest_overlay_seconds(huge)

    assert huge_seconds < 0.5
    assert huge_seconds < 2 * small_seconds + 0.05


def test_writing_a_pattern_changes_the_checksum_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "vol.qcow2"
    volumes.create(path, 16 * MiB)
    empty = volumes.checksum(path)

    volumes.write_pattern(path, 3 * MiB + 512, 8192, 0xAB)

    assert empty == sha256_of_chunk_digests(bytes(16 * MiB))
    assert volumes.checksum(path) != empty
    assert volumes.read_bytes(path, 3 * MiB + 510, 4) == b"\x00\x00\xab\xab"
    data_extents = [(e["start"], e["length"]) for e in volumes.map(path) if e["data"]]
    assert data_extents == [(3 * MiB, 64 * 1024)]


def test_write_bytes_lands_at_an_unaligned_offset(tmp_path: Path) -> None:
    path = tmp_path / "vol.qcow2"
    volumes.create(path, 2 * MiB)

    volumes.write_bytes(path, MiB - 3, b"snapshot")

    assert volumes.read_bytes(path, MiB - 4, 10) == b"\x00snapshot\x00"


def test_checksum_is_sha256_of_per_mib_digests_of_the_guest_view(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    data_block = bytes(range(256)) * 4096  # 1 MiB, not all zeros, laid across a chunk boundary
    guest = bytearray(3 * MiB + 512)  # a short last chunk
    guest[MiB + 7 : MiB + 7 + len(data_block)] = data_block
    guest[-100:] = b"\xff" * 100
    raw.write_bytes(bytes(guest))
    qcow2 = tmp_path / "disk.qcow2"

    volumes.convert(raw, "raw", qcow2)

    expected = sha256_of_chunk_digests(bytes(guest))
    assert volumes.checksum(raw, "raw") == expected
    assert volumes.checksum(qcow2) == expected


def test_flattened_copy_has_the_same_checksum_and_compares_equal(tmp_path: Path) -> None:
    base, overlay, flat = tmp_path / "base.qcow2", tmp_path / "overlay.qcow2", tmp_path / "flat.qcow2"
    volumes.create(base, 32 * MiB)
    volumes.write_pattern(base, 0, 4 * MiB, 0x01)
    volumes.create_overlay(overlay, base)
    volumes.write_pattern(overlay, 2 * MiB, 4 * MiB, 0x02)

    volumes.convert(overlay, "qcow2", flat)

    assert "backing-filename" not in volumes.info(flat)
    assert volumes.checksum(flat) == volumes.checksum(overlay)
    assert volumes.compare(overlay, flat) is True

    volumes.write_pattern(flat, 31 * MiB, 512, 0x03)

    assert volumes.compare(overlay, flat) is False
    assert volumes.checksum(flat) != volumes.checksum(overlay)


def test_convert_refuses_to_overwrite_its_destination(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.qcow2", tmp_path / "dst.qcow2"
    volumes.create(src, MiB)
    volumes.create(dst, 2 * MiB)

    with pytest.raises(VolumeError, match="already exists"):
        volumes.convert(src, "qcow2", dst)

    assert volumes.info(dst)["virtual-size"] == 2 * MiB


def test_writing_into_an_overlay_leaves_the_base_unchanged(tmp_path: Path) -> None:
    base, overlay = tmp_path / "base.qcow2", tmp_path / "overlay.qcow2"
    volumes.create(base, 16 * MiB)
    volumes.write_pattern(base, MiB, 2 * MiB, 0x5A)
    base_checksum = volumes.checksum(base)
    volumes.create_overlay(overlay, base)
    assert volumes.checksum(overlay) == base_checksum

    volumes.write_pattern(overlay, MiB, 4096, 0x77)

    assert volumes.checksum(base) == base_checksum
    assert volumes.read_bytes(base, MiB, 1) == b"\x5a"
    assert volumes.read_bytes(overlay, MiB, 1) == b"\x77"
    assert volumes.checksum(overlay) != base_checksum
    assert [e["depth"] for e in volumes.map(overlay) if e["start"] == MiB] == [0]


def test_checksum_of_a_100_gib_sparse_volume_is_fast(tmp_path: Path) -> None:
    path = tmp_path / "big.qcow2"
    volumes.create(path, 100 * GiB)
    for slot in range(8):
        volumes.write_pattern(path, slot * 12 * GiB + 4096, MiB, slot + 1)

    started = time.perf_counter()
    volumes.checksum(path)

    assert time.perf_counter() - started < 2


def test_compare_with_a_missing_image_is_an_error_not_a_difference(tmp_path: Path) -> None:
    path = tmp_path / "vol.qcow2"
    volumes.create(path, MiB)

    with pytest.raises(VolumeError, match=r"qemu-img compare .*No such file or directory"):
        volumes.compare(path, tmp_path / "missing.qcow2")


def test_raw_file_holding_a_qcow2_header_is_read_as_raw(tmp_path: Path) -> None:
    # A guest can write a qcow2 header naming any host file as backing into its own raw disk.
    header = tmp_path / "header.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/passwd", str(header), "1M"],
        check=True,
    )
    guest_disk = tmp_path / "guest.raw"
    guest_bytes = header.read_bytes().ljust(2 * MiB, b"\0")
    guest_disk.write_bytes(guest_bytes)
    probed = subprocess.run(
        ["qemu-img", "info", "--output=json", str(guest_disk)], capture_output=True, check=True, text=True
    )
    assert '"format": "qcow2"' in probed.stdout  # what probing would have done

    details = volumes.info(guest_disk, "raw")

    assert details["format"] == "raw"
    assert details["virtual-size"] == 2 * MiB
    assert "backing-filename" not in details
    assert volumes.read_bytes(guest_disk, 0, 4, "raw") == b"QFI\xfb"
    assert volumes.checksum(guest_disk, "raw") == sha256_of_chunk_digests(guest_bytes)
