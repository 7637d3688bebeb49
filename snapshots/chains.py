"""File-level operations on volume chains, each paired with the rows that describe it.

A volume is a qcow2 chain: its active file (`Volume.path`) backs onto sealed layers (`Layer`). Taking a
snapshot seals the active file and gives the volume a new empty overlay (redirect-on-write: metadata
only). Deleting a snapshot merges its layer into every child and removes the file. Each function can
run again after an interruption and finishes the job.

Every function here that touches a file runs inside `locked(...)` of the chains it touches, taken by the
caller outside any database transaction: jobs on one chain take turns. The lock is compute's
(`clouddigit.compute.chainlocks`, which resizing and deleting a volume take too), re-exported here for
the callers of these functions.
"""

from __future__ import annotations

from pathlib import Path

from django.db import transaction

from clouddigit.backends import hypervisor, volumes
from clouddigit.compute import recorded_chain
from clouddigit.compute import work as compute
from clouddigit.compute.chainlocks import locked as locked  # jobs here name it `chains.locked`
from clouddigit.compute.models import Layer, Volume
from clouddigit.errors import Conflict
from snapshots.models import SnapshotDisk


def _overlay(path: str, backing: str) -> None:
    """Create the overlay unless a previous attempt already did (with the same backing file)."""
    if Path(path).exists():
        if volumes.info(path).get("full-backing-filename") == str(Path(backing).resolve()):
            return
        Path(path).unlink()
    volumes.create_overlay(path, backing)


def seal_active(volume: Volume, overlay_path: str, *, new_backing: Layer | None = None) -> Layer:
    """Seal the volume's active file as a layer; the volume continues in a new overlay at `overlay_path`,
    on top of the sealed layer (a snapshot) or of `new_backing` (a roll-back to that layer)."""
    sealed = Layer(region_id=volume.region_id, path=volume.path, parent=volume.backing_layer)
    _overlay(overlay_path, (new_backing or sealed).path)
    with transaction.atomic():
        sealed.save()
        volume.path = overlay_path
        volume.backing_layer = new_backing or sealed
        volume.save(update_fields=["path", "backing_layer", "updated_at"])
    recorded_chain.record(volume)
    return sealed


def seal_live(uri: str, spec, disks) -> None:
    """The same as `seal_active` for the disks of a domain that a real qemu is running: libvirt creates
    the overlays and qemu switches to them in one atomic step (`hypervisor.create_live_overlays`)."""
    hypervisor.create_live_overlays(uri, spec, {disk.volume.path: disk.overlay_path for disk in disks})
    with transaction.atomic():
        for disk in disks:
            volume = disk.volume
            sealed = Layer.objects.create(
                region_id=volume.region_id, path=volume.path, parent=volume.backing_layer
            )
            Volume.objects.filter(pk=volume.pk).update(path=disk.overlay_path, backing_layer=sealed)
            SnapshotDisk.objects.filter(pk=disk.pk).update(layer=sealed)
    for disk in disks:
        recorded_chain.record_file(disk.overlay_path)


def new_volume_file(path: str, layer: Layer) -> None:
    """A restored volume's file: an overlay on the snapshot's layer, so restoring costs no copy."""
    _overlay(path, layer.path)
    recorded_chain.record_file(path)


def merge_away(layer: Layer) -> None:
    """Merge `layer` into each child (layers and volume files backing onto it), then delete it.

    Interrupted anywhere, running it again finishes the job: a child already rebased onto the parent
    is rebased again at no cost, and the layer's row goes only after every child has moved off it.
    """
    above = _volumes_above(layer)
    _merge(layer)
    for volume in above:
        recorded_chain.record(volume)


def _merge(layer: Layer) -> None:
    parent = layer.parent
    children: list[Layer | Volume] = [
        *layer.children.all(),
        *layer.volumes.select_related("vm__host", "vm__project__account"),
    ]
    for child in children:
        running = _running_vm_reading(child)
        if running is not None and isinstance(child, Layer):
            _commit_live(layer, child, children, running)
            return
        if running is not None and isinstance(child, Volume):
            vm, uri, spec = running
            hypervisor.pull_into_active(uri, spec, child.device, parent.path if parent else None)
        else:
            volumes.rebase(child.path, parent.path if parent else None)
        if isinstance(child, Layer):
            Layer.objects.filter(pk=child.pk).update(parent=parent)
        else:
            Volume.objects.filter(pk=child.pk).update(backing_layer=parent)
    with transaction.atomic():
        SnapshotDisk.objects.filter(layer=layer).update(layer=None)
        layer.delete()
    Path(layer.path).unlink(missing_ok=True)


def _running_vm_reading(child):
    """(vm, uri, spec) when a real qemu runs a VM whose disk chain contains `child`; else None."""
    for volume in _volumes_above(child):
        vm = volume.vm
        if vm is not None and vm.state == vm.State.RUNNING:
            uri, spec = vm.host.libvirt_uri, compute.domain_spec(vm)
            if hypervisor.live_overlays_supported(uri, spec):
                return vm, uri, spec
    return None


def _volumes_above(item: Layer | Volume) -> list[Volume]:
    """The volumes whose chain holds `item` (a volume: itself)."""
    pending, tops = [item], []
    while pending:
        current = pending.pop()
        if isinstance(current, Volume):
            tops.append(current)
        else:
            pending += [*current.children.all(), *current.volumes.select_related("vm__host")]
    return tops


def _commit_live(layer: Layer, child: Layer, children: list, running) -> None:
    """Delete a middle layer of a running chain: qemu commits the child layer into the layer's file, which
    then holds the child's view and takes over the child's identity. Safe only when nothing else backs
    onto the layer (a restored volume would see the child's data)."""
    vm, uri, spec = running
    if len(children) != 1:
        raise Conflict(
            f"This snapshot's data is also read by a restored volume or another branch while VM {vm.name} "
            "runs. Stop the VM (or delete the other snapshot or restored volume first), then delete it."
        )
    target = next(v.device for v in vm.volumes.all() if _chain_contains(v, child))
    hypervisor.commit_into_base(uri, spec, target, top=child.path, base=layer.path)
    old_child_path = child.path
    with transaction.atomic():
        SnapshotDisk.objects.filter(layer=layer).update(layer=None)
        Layer.objects.filter(pk=child.pk).update(parent=None, path=f"{old_child_path}.merged")
        layer_path, grandparent = layer.path, layer.parent
        layer.delete()
        Layer.objects.filter(pk=child.pk).update(parent=grandparent, path=layer_path)
    Path(old_child_path).unlink(missing_ok=True)


def _chain_contains(volume: Volume, layer: Layer) -> bool:
    current = volume.backing_layer
    while current is not None:
        if current.pk == layer.pk:
            return True
        current = current.parent
    return False


def delete_volume_file(path: str) -> None:
    Path(path).unlink(missing_ok=True)
