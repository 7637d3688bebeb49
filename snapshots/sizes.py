"""How many bytes a snapshot costs: computed from `qemu-img map` of the chains involved.

- billed: bytes of the snapshot's point-in-time view that the live volume no longer shares (it reads
  them from a different layer, or they were discarded). Zero at creation; grows as the volume is written.
- reclaimable: bytes of the snapshot's own layer that nothing else reads (the live volume, later
  snapshots, volumes restored from it): what deleting the snapshot would free.
"""

from __future__ import annotations

from clouddigit.backends import volumes
from clouddigit.compute.models import Layer

Extent = tuple[int, int, str]  # start, end, file the guest reads those bytes from


def data_extents(path: str) -> list[Extent]:
    """Where each allocated range of the guest view of `path` comes from; zero ranges are left out."""
    # force_share: a running VM's qemu holds its active file; sizes are estimates, a moving view is fine.
    chain = [layer["filename"] for layer in volumes.backing_chain(path, force_share=True)]
    return [
        (extent["start"], extent["start"] + extent["length"], chain[extent["depth"]])
        for extent in volumes.map(path, force_share=True)
        if extent.get("data") and not extent.get("zero")
    ]


def _overlap(a: list[Extent], b: list[Extent], same_file: bool) -> int:
    """Bytes where a range of `a` meets a range of `b` that reads from the same file (or any file)."""
    total, j = 0, 0
    for start, end, file in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            if not same_file or b[k][2] == file:
                total += min(end, b[k][1]) - max(start, b[k][0])
            k += 1
    return total


def billed_bytes(snapshot_path: str, live_path: str) -> int:
    ours = data_extents(snapshot_path)
    shared = _overlap(ours, data_extents(live_path), same_file=True)
    return sum(end - start for start, end, _ in ours) - shared


def _descendant_tops(layer: Layer) -> list[str]:
    """Files whose guest view may read from `layer`: volumes above it, and the layers above it."""
    tops, pending = [], [layer]
    while pending:
        current = pending.pop()
        tops += [volume.path for volume in current.volumes.all()]
        children = list(current.children.all())
        tops += [child.path for child in children]
        pending += children
    return tops


def reclaimable_bytes(layer: Layer) -> int:
    own = [extent for extent in data_extents(layer.path) if extent[2] == layer.path]
    own_total = sum(end - start for start, end, _ in own)
    read_by_others: list[Extent] = []
    for top in _descendant_tops(layer):
        read_by_others += [extent for extent in data_extents(top) if extent[2] == layer.path]
    read_by_others.sort()
    merged: list[Extent] = []
    for start, end, file in read_by_others:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]), file)
        else:
            merged.append((start, end, file))
    return own_total - _overlap(own, merged, same_file=False)
