"""Every operation on the compute inventory. Console views, API views and commands call these; none of
them writes the models itself. What a worker does on the hypervisor is in `work.py`."""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import Count

from clouddigit import operations
from clouddigit.access import require
from clouddigit.audit.log import audited, record_refusal
from clouddigit.backends import hypervisor
from clouddigit.compute import hooks, tasks
from clouddigit.compute.flavors import FLAVORS
from clouddigit.compute.models import BOOT_DEVICES, VM, Host, Project, Region, Volume, validate_tags
from clouddigit.compute.permissions import Perm
from clouddigit.errors import BackendUnavailable, Conflict, InvalidRequest, NotFound
from clouddigit.names import check_name, derived_name, shown
from clouddigit.queueing import enqueue, hypervisor_queue

log = logging.getLogger(__name__)

GiB = 2**30


def sync_regions() -> list[Region]:
    """Make the Region and Host rows match settings.REGIONS (run at start-up and by `demo`)."""
    regions = []
    for slug, config in settings.REGIONS.items():
        region, _ = Region.objects.update_or_create(
            slug=slug,
            defaults={
                "name": config["name"],
                "volume_dir": config["volume_dir"],
                "s3_endpoint": config["s3_endpoint"],
                "s3_bucket": config["s3_bucket"],
            },
        )
        for uri in config["libvirt_uris"]:
            info = _host_info_or_empty(uri)
            Host.objects.update_or_create(
                libvirt_uri=uri,
                defaults={
                    "region": region,
                    "name": info.get("hostname") or _host_name(uri),
                    "cpus": info.get("cpus", 0),
                    "memory_mib": info.get("memory_mib", 0),
                },
            )
        regions.append(region)
    return regions


def _host_name(uri: str) -> str:
    """`test:///.../bd-dha-1-host-1.xml` -> `bd-dha-1-host-1`; `qemu+ssh://h7/system` -> `h7`."""
    if uri.startswith("test://"):
        return Path(uri.removeprefix("test://")).stem
    return uri.split("://", 1)[-1].split("/", 1)[0].split("@")[-1] or uri


def _host_info_or_empty(uri: str) -> dict:
    try:
        return hypervisor.host_info(uri)
    except hypervisor.HypervisorError as error:
        log.warning("host %s does not answer: %s", uri, error)
        return {}


def check_tags(tags: dict | None) -> dict:
    """A copy of `tags` once valid; else an InvalidRequest naming the `tags` field."""
    try:
        validate_tags(tags or {})
    except ValidationError as error:
        raise InvalidRequest(error.messages[0], field="tags") from None
    return dict(tags or {})


@audited("compute.volume.create")
def create_volume(
    *,
    actor,
    project: Project,
    region: Region,
    name: str,
    size_bytes: int,
    bootable: bool = False,
    tags: dict | None = None,
    source_path: str | None = None,
    vm: VM | None = None,
    device: str = "",
) -> Volume:
    """A new volume, `creating` until the region's hypervisor worker has made its own qcow2 file under
    the region's volume folder: empty, or a copy of the standalone qcow2 file `source_path` (an image)
    grown to `size_bytes`. A VM's boot volume (`vm`, `device`) is made by the VM's create."""
    require(actor, Perm.OPERATE_VMS, project, "create volumes")
    name = check_name(name)
    tags = check_tags(tags)
    if size_bytes <= 0 or size_bytes % 2**20 or size_bytes > settings.VOLUME_MAX_GIB * GiB:
        raise InvalidRequest(
            f"The size must be a positive whole number of MiB, at most {settings.VOLUME_MAX_GIB} GiB.",
            field="size_bytes",
        )
    volume_id = uuid.uuid4()
    try:
        with transaction.atomic():
            volume = Volume.objects.create(
                id=volume_id,
                project=project,
                region=region,
                name=name,
                size_bytes=size_bytes,
                bootable=bootable,
                path=str(Path(region.volume_dir) / f"{volume_id}.qcow2"),
                source_path=source_path or "",
                tags=tags,
                state=Volume.State.CREATING,
                vm=vm,
                device=device,
                **({} if vm is not None else operations.queued()),
            )
    except IntegrityError:
        raise Conflict(
            f"A volume named {name!r} already exists in {project} ({region}).", field="name"
        ) from None
    if vm is None:
        enqueue(tasks.finish_create_volume, str(volume.pk), queue=hypervisor_queue(region.pk))
    return volume


def place(region: Region) -> Host:
    """The region's host with the fewest VMs (bare-metal flavors get a host of their own kind later)."""
    host = Host.objects.filter(region=region).annotate(load=Count("vms")).order_by("load", "name").first()
    if host is None:
        raise BackendUnavailable(f"Region {region} has no hypervisor host; check CLOUDDIGIT_*_LIBVIRT_URIS.")
    return host


def check_vm_request(*, name: str, vpc: str, flavor: str, tags: dict | None) -> tuple[str, str, dict]:
    """A new VM's name, VPC and tags once valid, and its flavor known; else the InvalidRequest naming
    the field. Callers with slow work before `create_vm` (copying an image) check first."""
    name, vpc, tags = check_name(name), check_name(vpc, field="vpc"), check_tags(tags)
    if flavor not in FLAVORS:
        raise InvalidRequest(
            f"Unknown flavor {flavor!r}; choose one of {', '.join(FLAVORS)}.", field="flavor"
        )
    return name, vpc, tags


@audited("compute.vm.create")
def create_vm(
    *,
    actor,
    project: Project,
    region: Region,
    name: str,
    flavor: str,
    vpc: str,
    boot_size_bytes: int,
    tags: dict | None = None,
    guest_agent: str = VM.GuestAgent.UNKNOWN,
    boot_source_path: str | None = None,
    start: bool = False,
) -> VM:
    """A VM, `creating` until the region's hypervisor worker has made its boot volume (attached as `vda`,
    `sda` on bare metal: empty, or a copy of the image file `boot_source_path`) and defined it on its
    host; then stopped, or started when `start`."""
    name, vpc, tags = check_vm_request(name=name, vpc=vpc, flavor=flavor, tags=tags)
    require(actor, Perm.OPERATE_VMS, project, "create VMs")
    host = place(region)
    try:
        with transaction.atomic():
            vm = VM.objects.create(
                project=project,
                region=region,
                host=host,
                name=name,
                flavor=flavor,
                vpc=vpc,
                tags=tags,
                guest_agent=guest_agent,
                state=VM.State.CREATING,
                start_when_created=start,
                **operations.queued(),
            )
    except IntegrityError:
        raise Conflict(f"A VM named {name!r} already exists in {project} ({region}).", field="name") from None
    create_volume(
        actor=actor,
        project=project,
        region=region,
        name=derived_name(name, "-boot"),
        size_bytes=boot_size_bytes,
        bootable=True,
        tags=tags,
        source_path=boot_source_path,
        vm=vm,
        device="sda" if FLAVORS[flavor].bare_metal else "vda",
    )
    enqueue(tasks.finish_create_vm, str(vm.pk), queue=hypervisor_queue(region.pk))
    return vm


@audited("compute.vm.retry", target="vm")
def retry_vm(*, actor, vm: VM) -> VM:
    """Create a VM whose create failed again: the volumes it was making, then its domain."""
    require(actor, Perm.OPERATE_VMS, vm.project, f"retry VM {vm.name}")
    if vm.state != VM.State.ERROR:
        raise Conflict(f"VM {vm.name} is {vm.get_state_display().lower()}: there is nothing to retry.")
    vm.transition(VM.State.CREATING, last_error="", **operations.restarted())
    vm.volumes.filter(state=Volume.State.ERROR).update(state=Volume.State.CREATING, last_error="")
    enqueue(tasks.finish_create_vm, str(vm.pk), queue=hypervisor_queue(vm.region_id))
    return vm


@audited("compute.volume.retry", target="volume")
def retry_volume(*, actor, volume: Volume) -> Volume:
    """Create a volume whose create failed again. A VM's boot volume is retried with its VM."""
    require(actor, Perm.OPERATE_VMS, volume.project, f"retry volume {volume.name}")
    if volume.state != Volume.State.ERROR:
        raise Conflict(f"Volume {volume.name} is {volume.state}: there is nothing to retry.")
    if volume.vm is not None:
        raise Conflict(f"Volume {volume.name} is made with VM {volume.vm.name}: retry the VM instead.")
    volume.transition(Volume.State.CREATING, last_error="", **operations.restarted())
    enqueue(tasks.finish_create_volume, str(volume.pk), queue=hypervisor_queue(volume.region_id))
    return volume


@audited("compute.volume.attach", target="volume")
def attach_volume(*, actor, volume: Volume, vm: VM, device: str) -> Volume:
    """Attach at `device` (see `attach_device` for choosing it): the boot disk of a stopped VM, or a
    secondary disk, hot-plugged when the VM runs."""
    require(actor, Perm.OPERATE_VMS, vm.project, f"attach volumes to VM {vm.name}")
    if volume.project_id != vm.project_id or volume.region_id != vm.region_id:
        raise NotFound(_NO_SUCH_VM.format(vm=vm.name, volume=volume), field="vm")
    if volume.vm is not None:
        raise Conflict(
            f"Volume {volume.name} is already attached to VM {volume.vm.name} as {volume.device}: "
            "detach it first.",
            field="volume",
        )
    if volume.state != Volume.State.AVAILABLE:
        raise Conflict(
            f"Volume {volume.name} is {volume.state}: attach it once it is available.", field="volume"
        )
    _check_free_device(vm, device)
    if device in BOOT_DEVICES and vm.state != VM.State.STOPPED:
        raise Conflict(
            f"VM {vm.name} is {vm.state}: a boot disk is attached while the VM is stopped. Stop it first.",
            field="device",
        )
    if vm.in_transition:
        raise Conflict(f"VM {vm.name} is {vm.state}: attach once it is running or stopped.", field="vm")
    try:
        with transaction.atomic():
            volume.transition(Volume.State.ATTACHED, vm=vm, device=device, last_error="")
    except IntegrityError:
        raise Conflict(
            f"VM {vm.name} already has a volume at {device}: choose another device.", field="device"
        ) from None
    if volume.vm_id and vm.state != VM.State.STOPPED:
        enqueue(tasks.plug_in, str(volume.pk), queue=hypervisor_queue(vm.region_id))
    return volume


# --- Volume lifecycle: create empty, attach as boot or secondary, detach, resize, delete ---------------

_NO_SUCH_VM = (
    "There is no VM {vm!r} in {volume.project} ({volume.region}) that you can see: a volume attaches only "
    "to a VM of its own project and region."
)
_DEVICE_RE = re.compile(r"^(vd|sd)([a-z])$")


def disk_prefix(vm: VM) -> str:
    """`sd` on bare metal (SCSI), `vd` on virtual flavors (virtio)."""
    return "sd" if vm.flavor_spec.bare_metal else "vd"


def vm_for_volume(actor, volume: Volume, reference: str) -> VM:
    """The VM `reference` (its id or name) names among the VMs of the volume's project and region that
    `actor` can see; any other VM is answered as one that does not exist (404)."""
    vms = VM.objects.visible_to(actor).filter(project=volume.project_id, region=volume.region_id)
    reference = (reference or "").strip()
    try:
        vm = vms.filter(pk=uuid.UUID(reference)).first()
    except ValueError:
        vm = vms.filter(name=reference).first()
    if vm is None:
        raise NotFound(_NO_SUCH_VM.format(vm=reference[:63], volume=volume), field="vm")
    return vm


def attach_device(vm: VM, *, boot: bool, device: str = "") -> str:
    """The device a volume attaches at: the flavor's boot device (`vda`, `sda` on bare metal), the one
    the user named, or the VM's next free secondary device (`vdb`, `vdc`...)."""
    prefix = disk_prefix(vm)
    boot_device = f"{prefix}a"
    device = (device or "").strip()
    if boot:
        if device and device != boot_device:
            raise InvalidRequest(
                f"VM {vm.name} ({vm.flavor}) boots from {boot_device}, not {device[:16]!r}.", field="device"
            )
        return boot_device
    if not device:
        used = set(vm.volumes.values_list("device", flat=True))
        candidates = (f"{prefix}{letter}" for letter in "bcdefghijklmnopqrstuvwxyz")
        free = next((candidate for candidate in candidates if candidate not in used), None)
        if free is None:
            raise Conflict(f"VM {vm.name} has no free device left ({prefix}b to {prefix}z).", field="device")
        return free
    match = _DEVICE_RE.match(device)
    if match is None or match.group(1) != prefix:
        raise InvalidRequest(
            f"{device[:16]!r} is not a device of VM {vm.name} ({vm.flavor}): use {prefix}b to {prefix}z.",
            field="device",
        )
    if device == boot_device:
        raise InvalidRequest(
            f"{device} is VM {vm.name}'s boot device: attach the volume as the boot disk instead.",
            field="device",
        )
    return device


def _check_free_device(vm: VM, device: str) -> None:
    holder = vm.volumes.filter(device=device).first()
    if holder is None:
        return
    if device in BOOT_DEVICES:
        raise Conflict(
            f"VM {vm.name} already has a boot disk ({holder.name} at {device}): a VM boots from one disk. "
            "Detach it first (with the VM stopped), or attach this volume as a secondary disk.",
            field="device",
        )
    raise Conflict(
        f"VM {vm.name} already has volume {holder.name} at {device}: choose another device, or leave it "
        "empty for the next free one.",
        field="device",
    )


def create_empty_volume(*, actor, project: Project, region: Region, name: str, size_gib, tags=None) -> Volume:
    """A new, empty volume of `size_gib` GiB (a whole number, at most VOLUME_MAX_GIB)."""
    try:
        size_bytes = volume_size_bytes(size_gib)
    except InvalidRequest as error:
        record_refusal(actor=actor, action="compute.volume.create", target=project, error=error)
        error.audited = True
        raise
    return create_volume(
        actor=actor,
        project=project,
        region=region,
        name=name,
        size_bytes=size_bytes,
        tags=tags,
    )


def volume_size_bytes(size_gib) -> int:
    """`size_gib` in bytes once it is a whole number of GiB within the limit; else an InvalidRequest."""
    limit = settings.VOLUME_MAX_GIB
    if isinstance(size_gib, bool) or not isinstance(size_gib, int) or not 1 <= size_gib <= limit:
        raise InvalidRequest(f"The size must be a whole number of GiB from 1 to {limit}.", field="size_gib")
    return size_gib * GiB


def attach_volume_to(*, actor, volume: Volume, vm: str, boot: bool = False, device: str = "") -> Volume:
    """Attach to the VM named `vm` (id or name) as its boot disk or as a secondary disk (at `device`, or
    the next free one). Console, API and CLI name the VM; `attach_volume` does the attaching (and
    the audit log). A VM the actor cannot name is refused before, and logged by the console or API."""
    target = vm_for_volume(actor, volume, vm)
    device = attach_device(target, boot=boot, device=device)
    return attach_volume(actor=actor, volume=volume, vm=target, device=device)


@audited("compute.volume.detach", target="volume")
def detach_volume(*, actor, volume: Volume) -> Volume:
    """Queue the detach: the volume is `detaching` until the hypervisor worker has unplugged it (a VM
    that runs must release it first), then `available`. A VM's boot disk detaches only while it is
    stopped."""
    vm = volume.vm
    if vm is None:
        raise Conflict(f"Volume {volume.name} is not attached to a VM.", field="volume")
    require(actor, Perm.OPERATE_VMS, vm.project, f"detach volumes from VM {vm.name}")
    if volume.is_boot_disk and vm.state != VM.State.STOPPED:
        raise Conflict(
            f"Volume {volume.name} is the boot disk ({volume.device}) of VM {vm.name}, which is {vm.state}: "
            "stop the VM first, then detach it.",
            field="volume",
        )
    if vm.in_transition:
        raise Conflict(f"VM {vm.name} is {vm.state}: detach once it is running or stopped.", field="volume")
    volume.transition(Volume.State.DETACHING, last_error="", **operations.restarted())
    enqueue(tasks.finish_detach, str(volume.pk), queue=hypervisor_queue(volume.region_id))
    return volume


VOLUME_STEPS = {
    Volume.State.CREATING: tasks.finish_create_volume,
    Volume.State.RESIZING: tasks.finish_resize,
    Volume.State.DETACHING: tasks.finish_detach,
    Volume.State.DELETING: tasks.finish_delete_volume,
}


def resume_volume_operation(volume: Volume) -> None:
    step = VOLUME_STEPS[Volume.State(volume.state)]
    enqueue(step, str(volume.pk), queue=hypervisor_queue(volume.region_id))


@audited("compute.volume.resize", target="volume")
def resize_volume(*, actor, volume: Volume, size_gib) -> Volume:
    """Grow the volume to `size_gib` GiB (never shrink: that would cut off data): `resizing` until the
    region's hypervisor worker has grown it. The guest sees the new size at once (a running VM's qemu
    grows it) or at its next boot; its file system grows from inside."""
    require(actor, Perm.OPERATE_VMS, volume.project, "resize volumes")
    size_bytes = volume_size_bytes(size_gib)
    if size_bytes < volume.size_bytes:
        raise InvalidRequest(
            f"Volume {volume.name} is {volume.size_bytes / GiB:g} GiB and volumes only grow: shrinking would "
            "cut off the data at its end. Create a smaller volume and copy the data you need instead.",
            field="size_gib",
        )
    if size_bytes == volume.size_bytes:
        raise InvalidRequest(f"Volume {volume.name} is already {size_gib} GiB.", field="size_gib")
    if volume.state not in {Volume.State.AVAILABLE, Volume.State.ATTACHED}:
        raise Conflict(f"Volume {volume.name} is {volume.state}: resize it once that has finished.")
    vm = volume.vm
    if vm is not None and vm.in_transition:
        raise Conflict(f"VM {vm.name} is {vm.state}: resize once it is running or stopped.")
    volume.transition(
        Volume.State.RESIZING, resize_to_bytes=size_bytes, last_error="", **operations.restarted()
    )
    enqueue(tasks.finish_resize, str(volume.pk), queue=hypervisor_queue(volume.region_id))
    return volume


class DeleteNeedsChoice(InvalidRequest):
    code = "SnapshotsNeedChoice"


SNAPSHOT_CHOICES = ("keep", "delete")


@audited("compute.volume.delete", target="volume")
def delete_volume(*, actor, volume: Volume, confirm: str, snapshots: str = "") -> Volume:
    """Delete a detached volume: its data is gone for good, so `confirm` repeats its name. What the apps
    above hold of it (its snapshots: `clouddigit.compute.hooks`) is kept (`snapshots="keep"`, as EBS
    does: they still restore) or deleted with it (`"delete"`); a volume that something holds is never
    deleted before the user has chosen."""
    require(actor, Perm.OPERATE_VMS, volume.project, "delete volumes")
    if volume.state in {Volume.State.CREATING, Volume.State.RESIZING}:
        raise Conflict(f"Volume {volume.name} is {volume.state}: delete it once that has finished or failed.")
    if volume.vm is not None:
        raise Conflict(
            f"Volume {volume.name} is attached to VM {volume.vm.name} as {volume.device}: detach it first.",
            field="volume",
        )
    if confirm != volume.name:
        raise InvalidRequest(
            f"Deleting a volume destroys its data for good. Type {volume.name!r} to confirm.", field="confirm"
        )
    held = hooks.holdings(volume)
    if held and snapshots not in SNAPSHOT_CHOICES:
        raise DeleteNeedsChoice(
            f"Volume {volume.name} has {' and '.join(holding.counted for holding in held)}: choose to keep "
            f"them ({'; '.join(holding.if_kept for holding in held)}) or to delete them with the volume.",
            field="snapshots",
        )
    busy = [holding.busy for holding in held if holding.busy]
    if busy:
        raise Conflict(" ".join(busy))
    volume.transition(Volume.State.DELETING, last_error="", **operations.restarted())
    if snapshots == "delete":
        hooks.delete_with(actor, volume)
    enqueue(tasks.finish_delete_volume, str(volume.pk), queue=hypervisor_queue(volume.region_id))
    return volume


@audited("compute.vm.start", target="vm")
def start_vm(*, actor, vm: VM) -> VM:
    require(actor, Perm.OPERATE_VMS, vm.project, f"start VM {vm.name}")
    vm.transition(VM.State.STARTING, last_error="")
    enqueue(tasks.apply_power_state, str(vm.id), queue=hypervisor_queue(vm.region_id))
    return vm


@audited("compute.vm.stop", target="vm")
def stop_vm(*, actor, vm: VM) -> VM:
    require(actor, Perm.OPERATE_VMS, vm.project, f"stop VM {vm.name}")
    vm.transition(VM.State.STOPPING, last_error="")
    enqueue(tasks.apply_power_state, str(vm.id), queue=hypervisor_queue(vm.region_id))
    return vm


# --- VM delete, tags ---------------------------------------------------------------------------------


class VolumeFate(models.TextChoices):
    KEEP = "keep", "Keep as a detached volume"
    DELETE = "delete", "Delete"


def default_fate(volume: Volume) -> str:
    """Unless told otherwise, the boot volume goes with its VM and data volumes stay, detached (the
    defaults of EC2's DeleteOnTermination): deleting a VM never destroys a data disk silently."""
    return VolumeFate.DELETE if volume.bootable else VolumeFate.KEEP


def volume_fates(vm: VM, chosen: dict | None) -> dict[Volume, str]:
    """Each attached volume and what happens to it: as `chosen` ({volume name or id: keep|delete}),
    else the default. A choice naming no volume of the VM, or a fate other than keep/delete, is refused."""
    attached = list(vm.volumes.order_by("device"))
    chosen = dict(chosen or {})
    fates = {}
    for volume in attached:
        fate = chosen.pop(volume.name, None) or chosen.pop(str(volume.pk), None) or default_fate(volume)
        if fate not in VolumeFate.values:
            raise InvalidRequest(
                f"Volume {volume.name}: say keep or delete, not {shown(str(fate))}.", field="volumes"
            )
        fates[volume] = fate
    if chosen:
        names = ", ".join(shown(str(name)) for name in chosen)
        attached_names = ", ".join(volume.name for volume in attached) or "none"
        raise InvalidRequest(
            f"VM {vm.name} has no attached volume {names}; its volumes are: {attached_names}.",
            field="volumes",
        )
    return fates


@audited("compute.vm.delete", target="vm")
def delete_vm(*, actor, vm: VM, confirm: str, volumes: dict | None = None) -> VM:
    """Delete a stopped VM: volumes to keep are detached now (a stopped VM holds no file open), the
    worker removes the domain and the other volumes. `confirm` is the VM's name, typed by the user."""
    require(actor, Perm.OPERATE_VMS, vm.project, f"delete VM {vm.name}")
    if vm.state == VM.State.DELETING:
        raise Conflict(f"VM {vm.name} is already being deleted.")
    if vm.state == VM.State.CREATING:
        raise Conflict(f"VM {vm.name} is still being created: delete it once that has finished or failed.")
    if vm.state not in {VM.State.STOPPED, VM.State.ERROR}:
        raise Conflict(
            f"VM {vm.name} is {vm.get_state_display().lower()}: stop it first, then delete it. "
            "Nothing was changed."
        )
    fates = volume_fates(vm, volumes)
    kept_unmade = [
        volume.name
        for volume, fate in fates.items()
        if volume.state == Volume.State.ERROR and fate == VolumeFate.KEEP
    ]
    if kept_unmade:
        raise InvalidRequest(
            f"Volume {', '.join(kept_unmade)} was never made (its create failed): it can only be deleted.",
            field="volumes",
        )
    creating = [volume.name for volume in fates if volume.state == Volume.State.CREATING]
    resizing = [volume.name for volume in fates if volume.state == Volume.State.RESIZING]
    busy = hooks.vm_delete_blockers(vm)
    if resizing:
        busy.insert(0, f"volume {', '.join(resizing)} is being resized")
    if creating:
        busy.insert(0, f"volume {', '.join(creating)} is still being created (a restore is under way)")
    if busy:
        raise Conflict(
            f"VM {vm.name} cannot be deleted now: {'; '.join(busy)}. Delete it once that has finished."
        )
    doomed = [volume.name for volume, fate in fates.items() if fate == VolumeFate.DELETE]
    if confirm != vm.name:
        lost = f" and deletes volume {', '.join(doomed)}" if doomed else ""
        raise InvalidRequest(
            f"Deleting VM {vm.name} removes it{lost} for good. Type {vm.name!r} to confirm.", field="confirm"
        )
    for volume, fate in fates.items():
        if fate == VolumeFate.KEEP:
            volume.transition(Volume.State.DETACHING)
            volume.transition(Volume.State.AVAILABLE, vm=None, device="")
    vm.transition(VM.State.DELETING, last_error="", **operations.restarted())
    enqueue(tasks.finish_delete_vm, str(vm.pk), queue=hypervisor_queue(vm.region_id))
    return vm


def resume_vm_operation(vm: VM) -> None:
    task = tasks.finish_create_vm if vm.state == VM.State.CREATING else tasks.finish_delete_vm
    enqueue(task, str(vm.pk), queue=hypervisor_queue(vm.region_id))


@audited("compute.vm.tag", target="vm")
def set_vm_tags(*, actor, vm: VM, tags: dict) -> VM:
    """Replace a VM's tags. Its tags decide which snapshot policies cover it (the spec's scope.vm_tags)."""
    require(actor, Perm.OPERATE_VMS, vm.project, f"tag VM {vm.name}")
    vm.tags = check_tags(tags)
    VM.objects.filter(pk=vm.pk).update(tags=vm.tags)
    return vm


@audited("compute.volume.tag", target="volume")
def set_volume_tags(*, actor, volume: Volume, tags: dict) -> Volume:
    """Replace a volume's tags."""
    require(actor, Perm.OPERATE_VMS, volume.project, f"tag volume {volume.name}")
    volume.tags = check_tags(tags)
    Volume.objects.filter(pk=volume.pk).update(tags=volume.tags)
    return volume


def merged_tags(tags: dict, patch: object) -> dict:
    """`tags` changed by a JSON merge patch (RFC 7396): `{"env": "prod"}` sets a tag, `{"env": null}`
    removes it. Removing a tag that is not there is refused: a typo would otherwise pass silently."""
    if not isinstance(patch, dict):
        raise InvalidRequest("Tags must be a map of key=value pairs.", field="tags")
    missing = [key for key, value in patch.items() if value is None and key not in tags]
    if missing:
        raise InvalidRequest(f"There is no tag {shown(str(missing[0]))} to remove.", field="tags")
    merged = {**tags, **{key: value for key, value in patch.items() if value is not None}}
    return {key: value for key, value in merged.items() if patch.get(key, "") is not None}
