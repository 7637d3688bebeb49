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

import hashlib
import json
import tempfile
from contextlib import suppress
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


def _windows(offsets: list[int], chunk_bytes: int) -> list[tuple[int, int]]:
    """Runs of adjacent chunk offsets as (offset, chunk count), at most READ_WINDOW_CHUNKS long: one
    qemu-img read each."""
    runs: list[tuple[int, int]] = []
    for offset in offsets:
        if runs and runs[-1][0] + runs[-1][1] * chunk_bytes == offset and runs[-1][1] < READ_WINDOW_CHUNKS:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((offset, 1))
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
        with _reading(copy, layer):
            offsets = data_chunks(layer.path, chunk_bytes)
        plans.append((source_disk, disk, layer, offsets))
    total = sum(min(chunk_bytes, d.size_bytes - o) for _, d, _, offsets in plans for o in offsets)
    Snapshot.objects.filter(pk=copy.pk).update(bytes_total=total, bytes_done=0)  # counted again below
    for source_disk, disk, layer, offsets in plans:
        if disk.manifest_key:
            done = sum(min(chunk_bytes, disk.size_bytes - o) for o in offsets)
            Snapshot.objects.filter(pk=copy.pk).update(bytes_done=F("bytes_done") + done)
            continue
        _step(copy, f"sending {disk.volume_name}: {len(offsets)} chunks of data")
        if not source_disk.checksum:
            with _reading(copy, layer):
                source_disk.checksum = volumes.checksum(layer.path)
            SnapshotDisk.objects.filter(pk=source_disk.pk).update(checksum=source_disk.checksum)
        chunks = _send_disk(copy, disk, layer, offsets, target, chunk_bytes)
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


def _send_disk(
    copy: Snapshot,
    disk: SnapshotDisk,
    layer: Layer,
    offsets: list[int],
    target: ObjectStore,
    chunk_bytes: int,
) -> list[list]:
    """Send the disk's data chunks the target lacks; return the manifest's [offset, length, sha256] list."""
    listed: list[list] = []
    done = 0
    for start, count in _windows(offsets, chunk_bytes):
        length = min(count * chunk_bytes, disk.size_bytes - start)
        with _reading(copy, layer):
            window = volumes.read_bytes(layer.path, start, length)
        for at in range(0, length, chunk_bytes):
            data = window[at : at + chunk_bytes]
            sent = 0
            if data.count(0) != len(data):  # written zeros read as zeros: nothing to send
                sha256 = hashlib.sha256(data).hexdigest()
                chunk = _reference(disk, copy.region, sha256, len(data))
                held = target.head(chunk.key)
                if held is None or held["sha256"] != sha256:
                    target.put_bytes(chunk.key, data, sha256=sha256)  # the server checks the SHA-256
                    sent = len(data)
                listed.append([start + at, len(data), sha256])
            done += 1
            # Progress is a step of its own: the sweeper marks only a copy that stopped moving as stuck.
            with transaction.atomic():  # the bytes sent and their metering move together
                Snapshot.objects.filter(pk=copy.pk).update(
                    bytes_done=F("bytes_done") + len(data),
                    bytes_sent=F("bytes_sent") + sent,
                    step=f"sending {disk.volume_name}: {done} of {len(offsets)} chunks"[:200],
                    step_started_at=timezone.now(),
                    stuck_reason="",
                )
                replication_metrics.meter(copy, sent)
            operations.checkpoint(f"sent chunk at {start + at} of {disk.volume_name}")
    return listed


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
                for offset, length, sha256 in manifest["chunks"]:
                    data = target.get_bytes(f"chunks/{sha256}")
                    actual = hashlib.sha256(data).hexdigest()
                    if actual != sha256 or len(data) != length:
                        raise ChunkMismatch(
                            f"Chunk chunks/{sha256} (offset {offset} of {disk.volume_name}) holds "
                            f"{len(data)} bytes with SHA-256 {actual} in {copy.region_id}, not the source's "
                            f"{length} bytes with SHA-256 {sha256}. Retry the copy to send it again."
                        )
                    out.seek(offset)
                    out.write(data)
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
