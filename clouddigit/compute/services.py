"""Every operation on the compute inventory. Console views, API views and commands call these; none of
them writes the models itself. What a worker does on the hypervisor is in `work.py`."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count

from clouddigit.access import require
from clouddigit.audit.log import audited
from clouddigit.backends import hypervisor, volumes
from clouddigit.compute import tasks
from clouddigit.compute.flavors import FLAVORS
from clouddigit.compute.models import VM, Host, Project, Region, Volume, validate_tags
from clouddigit.compute.permissions import Perm
from clouddigit.errors import BackendUnavailable, Conflict, InvalidRequest
from clouddigit.queueing import enqueue, hypervisor_queue

log = logging.getLogger(__name__)


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


def check_name(name: str, field: str = "name") -> str:
    name = (name or "").strip()
    if not name or len(name) > 63 or not all(c.isalnum() or c in "-_." for c in name):
        raise InvalidRequest(
            f"{name!r} is not a valid name: use 1-63 letters, digits, '-', '_' or '.'.", field=field
        )
    return name


def derived_name(name: str, suffix: str) -> str:
    """`db-01` + `-boot`: a resource named after another, cut to fit the 63-character limit."""
    return f"{name[: 63 - len(suffix)]}{suffix}"


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
) -> Volume:
    """A new volume backed by its own qcow2 file under the region's volume folder: empty, or a copy of
    the standalone qcow2 file `source_path` (an image) grown to `size_bytes`."""
    require(actor, Perm.OPERATE_VMS, project, "create volumes")
    name = check_name(name)
    tags = check_tags(tags)
    if size_bytes <= 0 or size_bytes % 2**20:
        raise InvalidRequest("The size must be a positive whole number of MiB.", field="size_bytes")
    volume_id = uuid.uuid4()
    path = Path(region.volume_dir) / f"{volume_id}.qcow2"
    if source_path is None:
        volumes.create(str(path), size_bytes)
    else:
        volumes.convert(source_path, "qcow2", str(path))
    try:
        if source_path is not None:
            volumes.grow(str(path), size_bytes)
        with transaction.atomic():
            return Volume.objects.create(
                id=volume_id,
                project=project,
                region=region,
                name=name,
                size_bytes=size_bytes,
                bootable=bootable,
                path=str(path),
                tags=tags,
            )
    except IntegrityError:
        path.unlink(missing_ok=True)
        raise Conflict(
            f"A volume named {name!r} already exists in {project} ({region}).", field="name"
        ) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise


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
    guest_agent: str = VM.GuestAgent.RUNNING,
    boot_source_path: str | None = None,
) -> VM:
    """A stopped VM with a fresh boot volume attached as `vda` (`sda` on bare metal): empty, or a copy
    of the image file `boot_source_path`."""
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
            )
    except IntegrityError:
        raise Conflict(f"A VM named {name!r} already exists in {project} ({region}).", field="name") from None
    boot = create_volume(
        actor=actor,
        project=project,
        region=region,
        name=derived_name(name, "-boot"),
        size_bytes=boot_size_bytes,
        bootable=True,
        tags=tags,
        source_path=boot_source_path,
    )
    try:
        attach_volume(actor=actor, volume=boot, vm=vm, device="sda" if FLAVORS[flavor].bare_metal else "vda")
    except BaseException:
        # The rows roll back with the transaction; the file is ours to remove.
        Path(boot.path).unlink(missing_ok=True)
        raise
    return vm


@audited("compute.volume.attach", target="volume")
def attach_volume(*, actor, volume: Volume, vm: VM, device: str) -> Volume:
    require(actor, Perm.OPERATE_VMS, vm.project, f"attach volumes to VM {vm.name}")
    if volume.project_id != vm.project_id or volume.region_id != vm.region_id:
        raise InvalidRequest("A volume attaches only to a VM of its own project and region.", field="vm")
    volume.transition(Volume.State.ATTACHED, vm=vm, device=device)
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


def queue_definition(vm: VM) -> None:
    """Have the region's worker define a new VM's domain on its host (starting it does so too)."""
    enqueue(tasks.define_vm, str(vm.id), queue=hypervisor_queue(vm.region_id))
