"""The worker side of cross-region snapshot copies: send the source's guest data to the target region's
object store as content-addressed chunks, then land it there as qcow2 layers.

- `send` (replication queue): for each disk, the guest view of the source snapshot's layer chain is cut
  into `REPLICATION_CHUNK_BYTES` chunks; chunks that read as zeros (unallocated, or zero clusters, or
  written zeros) are not sent. Each other chunk is keyed by its SHA-256 (`chunks/<sha256>`); the copy's
  reference to it is recorded in the database before the object is looked at, then the object is sent
  only when the target does not hold it (HEAD), with the SHA-256 the server checks before storing it.
  The disk's manifest (its chunks in order, its size and its guest checksum) is written last.
- `land` (the target region's hypervisor queue): reads only the target region's store. Every chunk's
  bytes are hashed again and must match their key (the source's SHA-256), the disk is written as a
  standalone qcow2 layer in the target region, and its guest checksum must match the source's. Only
  then is the copy Available.

Both steps run again after an interruption without redoing what landed: a chunk already in the target
is not sent again (so a copy is incremental against every earlier copy into that region, too).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import tempfile
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from clouddigit import operations
from clouddigit.backends import volumes
from clouddigit.backends.objectstore import ObjectStore
from clouddigit.compute.models import Layer, Region
from clouddigit.errors import Conflict
from clouddigit.statemachine import TransitionRefused
from snapshots import chains, replication_metrics
from snapshots.models import Chunk, ChunkRef, Snapshot, SnapshotDisk

READ_WINDOW_CHUNKS = 16


class ChunkMismatch(Conflict):
    code = "ReplicationChunkMismatch"


def store(region: Region) -> ObjectStore:
    return ObjectStore.for_region(region.config)


def _step(copy: Snapshot, text: str) -> None:
    now, text = timezone.now(), text[:200]
    Snapshot.objects.filter(pk=copy.pk).update(step=text, step_started_at=now, stuck_reason="")
    copy.step = text
    operations.checkpoint(text)


def _pairs(copy: Snapshot) -> list[tuple[SnapshotDisk, SnapshotDisk]]:
    """(source disk, copy disk) in order; the copy's disks were made from the source's, same names."""
    source = copy.source_snapshot
    if source is None:
        raise Conflict(f"The snapshot copy {copy.name} was copying has been deleted; delete this copy.")
    mine = {disk.volume_name: disk for disk in copy.disks.all()}
    return [(disk, mine[disk.volume_name]) for disk in source.disks.select_related("layer")]


def data_chunks(path: str, chunk_bytes: int) -> list[int]:
    """Offsets of the chunks of the guest view that may hold data (`qemu-img map`: not zero)."""
    offsets: set[int] = set()
    for extent in volumes.map(path):
        if extent["zero"]:
            continue
        first = extent["start"] // chunk_bytes
        end = -(-(extent["start"] + extent["length"]) // chunk_bytes)
        offsets.update(index * chunk_bytes for index in range(first, end))
    return sorted(offsets)


def changed_extents(path: str, depth: int) -> list[tuple[int, int, bool]]:
    """(start, length, zero) of the guest ranges written in the `depth` top layers of the chain at
    `path`: what changed since the layer at that depth (qemu-img map at the layers' cluster granularity)."""
    return [
        (extent["start"], extent["length"], bool(extent["zero"]))
        for extent in volumes.map(path)
        if extent.get("depth", depth) < depth
    ]


def _pieces(extents: list[tuple[int, int]], chunk_bytes: int) -> list[tuple[int, int]]:
    """(offset, length) pieces of at most `chunk_bytes` covering `extents`."""
    return [
        (at, min(chunk_bytes, start + length - at))
        for start, length in extents
        for at in range(start, start + length, chunk_bytes)
    ]


def _windows(pieces: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Runs of adjacent pieces, at most READ_WINDOW_CHUNKS long: one qemu-img read each."""
    runs: list[list[tuple[int, int]]] = []
    for offset, length in pieces:
        if runs and sum(runs[-1][-1]) == offset and len(runs[-1]) < READ_WINDOW_CHUNKS:
            runs[-1].append((offset, length))
        else:
            runs.append([(offset, length)])
    return runs


def _reference(disk: SnapshotDisk, region: Region, sha256: str, size: int) -> Chunk:
    """Record that `disk` uses the chunk before its object is looked at: from then on `collect` leaves
    the object alone (it deletes only under the row's lock, rows with no reference)."""
    with transaction.atomic():
        chunk, _ = Chunk.objects.select_for_update().get_or_create(
            region=region, sha256=sha256, defaults={"size": size}
        )
        ChunkRef.objects.get_or_create(disk=disk, chunk=chunk)
        if chunk.unreferenced_since is not None:
            Chunk.objects.filter(pk=chunk.pk).update(unreferenced_since=None)
    return chunk


def _reference_held(disk: SnapshotDisk, region: Region, sha256s: set[str]) -> bool:
    """Reference chunks an earlier copy holds in `region`, under their rows' locks; False (nothing
    referenced) when `collect` has deleted any of them meanwhile."""
    with transaction.atomic():
        chunks = list(Chunk.objects.select_for_update().filter(region=region, sha256__in=sha256s))
        if len(chunks) != len(sha256s):
            transaction.set_rollback(True)
            return False
        ChunkRef.objects.bulk_create(
            [ChunkRef(disk=disk, chunk=chunk) for chunk in chunks], ignore_conflicts=True, batch_size=2000
        )
        Chunk.objects.filter(pk__in=[chunk.pk for chunk in chunks], unreferenced_since__isnull=False).update(
            unreferenced_since=None
        )
    return True


def _base(copy: Snapshot, source_disk: SnapshotDisk) -> tuple[SnapshotDisk, int] | None:
    """The landed copy in the target region of an earlier snapshot of this disk whose layer is still in
    its chain, the nearest one: (that copy's disk, the depth of its source layer in this chain)."""
    depths: dict = {}
    layer = source_disk.layer
    depth = 0
    while layer is not None:
        depths[layer.pk] = depth
        layer, depth = layer.parent, depth + 1
    del depths[source_disk.layer_id]
    sources = dict(
        SnapshotDisk.objects.filter(layer_id__in=depths, volume_name=source_disk.volume_name).values_list(
            "snapshot_id", "layer_id"
        )
    )
    copies = Snapshot.objects.filter(
        source_snapshot_id__in=sources, region=copy.region, state=Snapshot.State.AVAILABLE
    ).values_list("pk", "source_snapshot_id")
    nearest = min(((depths[sources[source_id]], copy_id) for copy_id, source_id in copies), default=None)
    if nearest is None:
        return None
    base = (
        SnapshotDisk.objects.filter(snapshot_id=nearest[1], volume_name=source_disk.volume_name)
        .exclude(manifest_key="")
        .first()
    )
    return (base, nearest[0]) if base is not None else None


def _reading(copy: Snapshot, layer: Layer):
    """The source chain, shared, for one read: a merge (deleting an older snapshot rewrites this layer's
    file with the same guest view) waits for it, and a snapshot of the volume is not held up by a long
    copy, which takes the lock again for each read window."""
    return chains.locked(
        layer, purpose=f"copying snapshot {copy.source_snapshot} to {copy.region_id}", shared=True
    )


def send(copy_id: str) -> Snapshot:
    """Send (a CREATING copy whose manifests are not all written): every disk's chunks, then its manifest."""
    copy = Snapshot.objects.select_related("region", "source_snapshot").get(pk=copy_id)
    target = store(copy.region)
    target.ensure_bucket()
    chunk_bytes = settings.REPLICATION_CHUNK_BYTES
    pairs = _pairs(copy)
    plans = []
    for source_disk, disk in pairs:
        layer = source_disk.layer
        if layer is None:
            raise Conflict(f"Snapshot {copy.source_snapshot} has no data for {source_disk.volume_name}.")
        plans.append((source_disk, disk, layer, _plan(copy, source_disk, disk, layer, target, chunk_bytes)))
    total = sum(length for *_, plan in plans for _, length in plan.pieces)
    Snapshot.objects.filter(pk=copy.pk).update(bytes_total=total, bytes_done=0)  # counted again below
    for source_disk, disk, layer, plan in plans:
        if disk.manifest_key:
            done = sum(length for _, length in plan.pieces)
            Snapshot.objects.filter(pk=copy.pk).update(bytes_done=F("bytes_done") + done)
            continue
        _step(copy, f"sending {disk.volume_name}: {len(plan.pieces)} chunks of data")
        if not source_disk.checksum:
            with _reading(copy, layer):
                source_disk.checksum = volumes.checksum(layer.path)
            SnapshotDisk.objects.filter(pk=source_disk.pk).update(checksum=source_disk.checksum)
        sent = _send_disk(copy, disk, layer, plan.pieces, target)
        # Entries are written in order when the copy lands, later ones over earlier ones: the base
        # copy's chunks, then what changed since (zeros as an empty SHA-256, then the new chunks).
        chunks = plan.base + [[offset, length, ""] for offset, length in plan.zeros] + sent
        manifest = {
            "disk": disk.volume_name,
            "size_bytes": disk.size_bytes,
            "chunk_bytes": chunk_bytes,
            "checksum": source_disk.checksum,
            "chunks": chunks,
        }
        key = f"manifests/{copy.pk}/{disk.pk}.json"
        target.put_bytes(key, json.dumps(manifest).encode())
        SnapshotDisk.objects.filter(pk=disk.pk).update(manifest_key=key, checksum=source_disk.checksum)
        operations.checkpoint(f"wrote the manifest of {disk.volume_name}")
    _step(copy, f"queued to land in {copy.region_id}")
    return copy


@dataclass
class Plan:
    """What a disk's copy sends (`pieces`: (offset, length)) and what it takes from an earlier copy in
    the target region (`base` manifest entries, with the ranges that became zeros since)."""

    pieces: list[tuple[int, int]]
    base: list[list] = field(default_factory=list)
    zeros: list[tuple[int, int]] = field(default_factory=list)


def _plan(
    copy: Snapshot,
    source_disk: SnapshotDisk,
    disk: SnapshotDisk,
    layer: Layer,
    target: ObjectStore,
    chunk_bytes: int,
) -> Plan:
    """Incremental at the layers' cluster granularity when an earlier snapshot of the disk has a landed
    copy in the target region and its layer is still in this chain: the layers above it hold exactly the
    clusters written since, so only those are read and sent, and the rest comes from that copy's
    manifest. Otherwise (a first copy, or its base was merged away) every chunk that may hold data,
    which content addressing still sends only when the target lacks it."""
    found = _base(copy, source_disk)
    if found is not None:
        base_disk, depth = found
        with _reading(copy, layer):
            changed = changed_extents(layer.path, depth)
        entries = json.loads(target.get_bytes(base_disk.manifest_key))["chunks"]
        written = [(start, length) for start, length, zero in changed if not zero]
        zeros = [(start, length) for start, length, zero in changed if zero]
        covered = sorted(written + zeros)
        # Entries wholly rewritten since are dropped, so a chain of incremental copies stays small.
        kept = [entry for entry in entries if not _inside(entry[0], entry[1], covered)]
        if _reference_held(disk, copy.region, {entry[2] for entry in kept if entry[2]}):
            return Plan(pieces=_pieces(written, chunk_bytes), base=kept, zeros=zeros)
    with _reading(copy, layer):
        offsets = data_chunks(layer.path, chunk_bytes)
    return Plan(pieces=[(offset, min(chunk_bytes, disk.size_bytes - offset)) for offset in offsets])


def _inside(offset: int, length: int, extents: list[tuple[int, int]]) -> bool:
    """Whether [offset, offset + length) lies inside one of the sorted, merged `extents`."""
    index = bisect.bisect_right(extents, (offset, float("inf"))) - 1
    return index >= 0 and extents[index][0] + extents[index][1] >= offset + length


def _send_disk(
    copy: Snapshot, disk: SnapshotDisk, layer: Layer, pieces: list[tuple[int, int]], target: ObjectStore
) -> list[list]:
    """Send the pieces the target lacks, `REPLICATION_SEND_THREADS` at a time; return the manifest's
    [offset, length, sha256] list, in order.

    Each piece's reference row is committed before it is looked at (as `_reference` says); its HEAD and
    PUT run in a thread; its progress is recorded by this thread only once its upload has completed, so
    after a SIGKILL `bytes_done` and `bytes_sent` count no piece that was still in flight (a resumed copy
    finds such a piece in the target by its HEAD and does not send it again)."""
    listed: list[list] = []
    in_flight: dict[Future, tuple[int, int]] = {}
    counts = {"done": 0}
    queued: set[str] = set()  # chunks already on their way: pieces with equal bytes are sent once
    limit = 2 * settings.REPLICATION_SEND_THREADS

    def settle(wait_for: str) -> None:
        finished, _ = wait(in_flight, return_when=wait_for)
        done = sent = 0
        offsets = []
        for future in finished:
            offset, length = in_flight.pop(future)
            sent += future.result()  # raises the upload's error
            done += length
            offsets.append(offset)
        counts["done"] += len(finished)
        _progress(copy, disk, done, sent, counts["done"], len(pieces))
        for offset in sorted(offsets):
            operations.checkpoint(f"sent chunk at {offset} of {disk.volume_name}")

    with ThreadPoolExecutor(settings.REPLICATION_SEND_THREADS, thread_name_prefix="replication-send") as pool:
        for window in _windows(pieces):
            start = window[0][0]
            with _reading(copy, layer):
                data = volumes.read_bytes(layer.path, start, sum(window[-1]) - start)
            for offset, length in window:
                piece = data[offset - start : offset - start + length]
                if piece.count(0) == len(piece):  # written zeros: listed as a zero range, nothing sent
                    in_flight[pool.submit(int)] = (offset, length)  # done at once, 0 bytes sent
                    listed.append([offset, length, ""])
                    continue
                sha256 = hashlib.sha256(piece).hexdigest()
                _reference(disk, copy.region, sha256, length)
                if sha256 in queued:  # the same bytes earlier in this disk: one upload serves both
                    in_flight[pool.submit(int)] = (offset, length)
                else:
                    queued.add(sha256)
                    in_flight[pool.submit(_put_if_missing, target, sha256, piece)] = (offset, length)
                listed.append([offset, length, sha256])
                while len(in_flight) >= limit:
                    settle(FIRST_COMPLETED)
        while in_flight:
            settle(ALL_COMPLETED)
    return listed


def _put_if_missing(target: ObjectStore, sha256: str, data: bytes) -> int:
    """HEAD, then PUT unless the target holds the chunk; the bytes sent."""
    key = f"chunks/{sha256}"
    held = target.head(key)
    if held is not None and held["sha256"] == sha256:
        return 0
    target.put_bytes(key, data, sha256=sha256)  # the server checks the SHA-256
    return len(data)


def _progress(copy: Snapshot, disk: SnapshotDisk, done: int, sent: int, count: int, of: int) -> None:
    """Record pieces whose upload completed. Progress is a step of its own: the sweeper marks only a
    copy that stopped moving as stuck. The bytes sent and their metering move together."""
    with transaction.atomic():
        Snapshot.objects.filter(pk=copy.pk).update(
            bytes_done=F("bytes_done") + done,
            bytes_sent=F("bytes_sent") + sent,
            step=f"sending {disk.volume_name}: {count} of {of} chunks"[:200],
            step_started_at=timezone.now(),
            stuck_reason="",
        )
        replication_metrics.meter(copy, sent)


def landing_path(disk: SnapshotDisk, region: Region) -> Path:
    return Path(region.volume_dir) / "copies" / f"{disk.pk}.qcow2"


def land(copy_id: str) -> Snapshot:
    """Land (a CREATING copy whose manifests are written): each disk as a qcow2 layer in the target
    region, built from the target's own object store only and checked chunk by chunk, then as a whole."""
    copy = Snapshot.objects.select_related("region").get(pk=copy_id)
    target = store(copy.region)
    for disk in copy.disks.filter(layer__isnull=True):
        _step(copy, f"landing {disk.volume_name} in {copy.region_id}")
        manifest = json.loads(target.get_bytes(disk.manifest_key))
        path = landing_path(disk, copy.region)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # left by an interrupted attempt
        with tempfile.TemporaryDirectory(prefix="clouddigit-land-", dir=path.parent) as scratch:
            raw = Path(scratch) / "disk.raw"
            with raw.open("wb") as out:
                out.truncate(manifest["size_bytes"])
                _write_chunks(copy, disk, manifest, target, out)
            volumes.convert(raw, "raw", path)
        landed = volumes.checksum(path)
        if landed != manifest["checksum"]:
            path.unlink(missing_ok=True)
            raise ChunkMismatch(
                f"{disk.volume_name} landed in {copy.region_id} with checksum {landed}, not the source's "
                f"{manifest['checksum']}. Retry the copy."
            )
        with transaction.atomic():
            layer = Layer.objects.create(region=copy.region, path=str(path))
            SnapshotDisk.objects.filter(pk=disk.pk).update(layer=layer)
        operations.checkpoint(f"landed {disk.volume_name}")
    copy.transition(Snapshot.State.AVAILABLE, completed_at=timezone.now(), step="", last_error="")
    return copy


def _write_chunks(copy: Snapshot, disk: SnapshotDisk, manifest: dict, target: ObjectStore, out) -> None:
    """Write the manifest's entries into `out` in order, later over earlier; chunks are fetched
    `REPLICATION_SEND_THREADS` at a time and each is checked against its SHA-256 before it is written."""
    entries = manifest["chunks"]
    batch = 2 * settings.REPLICATION_SEND_THREADS
    with ThreadPoolExecutor(settings.REPLICATION_SEND_THREADS, thread_name_prefix="replication-land") as pool:
        for first in range(0, len(entries), batch):
            group = entries[first : first + batch]
            fetched = [
                pool.submit(target.get_bytes, f"chunks/{sha256}") if sha256 else None for *_, sha256 in group
            ]
            for (offset, length, sha256), future in zip(group, fetched, strict=True):
                out.seek(offset)
                if future is None:  # a range that reads as zeros since the base copy
                    for at in range(0, length, manifest["chunk_bytes"]):
                        out.write(bytes(min(manifest["chunk_bytes"], length - at)))
                    continue
                data = future.result()
                actual = hashlib.sha256(data).hexdigest()
                if actual != sha256 or len(data) != length:
                    raise ChunkMismatch(
                        f"Chunk chunks/{sha256} (offset {offset} of {disk.volume_name}) holds "
                        f"{len(data)} bytes with SHA-256 {actual} in {copy.region_id}, not the source's "
                        f"{length} bytes with SHA-256 {sha256}. Retry the copy to send it again."
                    )
                out.write(data)


def manifests_written(copy: Snapshot) -> bool:
    return not copy.disks.filter(manifest_key="").exists()


# --- Deleting a copy --------------------------------------------------------------------------------


def release(copy: Snapshot) -> None:
    """Drop the copy's chunk references and manifests (deleting it); chunks no copy uses any more are
    marked, and `collect` deletes them after the grace period."""
    target = store(copy.region)
    for disk in copy.disks.all():
        with transaction.atomic():
            chunk_ids = list(disk.chunk_refs.values_list("chunk_id", flat=True))
            disk.chunk_refs.all().delete()
            Chunk.objects.filter(pk__in=chunk_ids, unreferenced_since__isnull=True).exclude(
                pk__in=ChunkRef.objects.values("chunk_id")
            ).update(unreferenced_since=timezone.now())
        if disk.manifest_key:
            target.delete(disk.manifest_key)
        if disk.layer_id is None:
            landing_path(disk, copy.region).unlink(missing_ok=True)


def collect(now=None) -> int:
    """Delete the objects of chunks no copy has used for the grace period; returns how many. Each goes
    under its row's lock with the references checked again, so a copy that references it meanwhile
    (`_reference` takes the same lock) either keeps it or finds it gone and sends it again."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.REPLICATION_CHUNK_GRACE_SECONDS)
    deleted = 0
    candidates = Chunk.objects.filter(unreferenced_since__lte=cutoff).select_related("region")
    for candidate in candidates:
        with transaction.atomic():
            chunk = (
                Chunk.objects.select_for_update()
                .filter(pk=candidate.pk, unreferenced_since__lte=cutoff)
                .first()
            )
            if chunk is None or ChunkRef.objects.filter(chunk=chunk).exists():
                continue
            store(candidate.region).delete(chunk.key)
            chunk.delete()
            deleted += 1
    return deleted


# --- Failing ------------------------------------------------------------------------------------------


def fail(copy_id: str, error: str) -> None:
    """The copy is set aside as Error with its reason (the other copies go on: each is its own task), and
    the failure is recorded for `snap.replicate.failures_24h`; `snapshot retry` takes it up again."""
    with suppress(Snapshot.DoesNotExist, TransitionRefused):
        copy = Snapshot.objects.get(pk=copy_id)
        with transaction.atomic():
            copy.transition(Snapshot.State.ERROR, last_error=error[:2000])
            replication_metrics.record_failure(copy, error)
