"""Creating VMs from images: what the VM-create picker offers, why an image is not offered, and the
create itself (the VM's row, whose boot volume the hypervisor worker copies from the image)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db.models import Q

from clouddigit.access import can, require
from clouddigit.audit.log import audited
from clouddigit.compute import services as compute
from clouddigit.compute.models import VM, Project, Region
from clouddigit.compute.permissions import Perm
from clouddigit.errors import InvalidRequest
from images import attestation
from images.files import local_file
from images.models import Image

MiB = 2**20


def picker(actor, project: Project, region: Region, show_deprecated: bool = False):
    """The images `actor` may boot a VM from in `project` and `region`: available, in that region,
    offered to the project (platform, its own, shared with it, org-shared in its account), and, for
    any but platform images, with `image.viewer` (view_images) held on the project."""
    images = Image.objects.filter(region=region, state=Image.State.AVAILABLE).offered_to(project)
    if not can(actor, Perm.VIEW_IMAGES, project):
        images = images.filter(project__isnull=True)
    if not show_deprecated:
        images = images.not_deprecated()
    return images.select_related("project__account").order_by("slot", "name")


@dataclass(frozen=True)
class Reason:
    image: Image | None
    reason: str
    fix: str

    def as_dict(self) -> dict:
        return {
            "image": str(self.image.id) if self.image else None,
            "name": self.image.name if self.image else None,
            "region": self.image.region_id if self.image else None,
            "project": self.image.owner_label if self.image else None,
            "reason": self.reason,
            "fix": self.fix,
        }


def why_missing(actor, project: Project, region: Region, reference: str) -> list[Reason]:
    """Answer "why is my image missing from the picker?" for each image named `reference` (a name or
    an id) in the project's account or the platform catalogue: the spec's reasons and their fixes.

    Images of other accounts are never looked at, so the answer leaks nothing across accounts."""
    reference = reference.strip()
    candidates = Image.objects.filter(Q(project__isnull=True) | Q(project__account=project.account_id))
    matches = list(
        candidates.filter(Q(name=reference) | Q(id=reference) if _is_uuid(reference) else Q(name=reference))
        .select_related("project__account")
        .order_by("region_id", "project__slug")
    )
    if not matches:
        return [
            Reason(
                None,
                f"No image named {reference!r} exists in {project.account} or the Cloud Digit catalogue.",
                "Check the spelling, or upload the image (Images → Upload) or promote a snapshot to it.",
            )
        ]
    offered = {image.pk for image in Image.objects.offered_to(project).filter(pk__in=[m.pk for m in matches])}
    return [
        reason for image in matches for reason in _reasons(actor, project, region, image, image.pk in offered)
    ]


def _reasons(actor, project: Project, region: Region, image: Image, offered: bool) -> list[Reason]:
    """Every reason that keeps `image` out of the picker, so that fixing one does not reveal the next."""
    reasons = []
    if not offered:
        reasons.append(
            Reason(
                image,
                f"The image is in project {image.project} and is not shared with {project}.",
                f"An image.admin of {image.project} shares it with {project} "
                f"(Images → {image.name} → Share), or copies it into {project} (→ Copy).",
            )
        )
    elif image.project_id and not can(actor, Perm.VIEW_IMAGES, project):
        reasons.append(
            Reason(
                image,
                f"The image is {_offer(image, project)}, but your roles do not include image.viewer, "
                "which launching custom images needs.",
                f"Ask an account admin to bind image.viewer to you on {project} or on {project.account}.",
            )
        )
    if image.is_deprecated:
        reasons.append(
            Reason(
                image,
                f"The image is deprecated (since {image.deprecated_at:%Y-%m-%d %H:%M} UTC)."
                + (f" {image.deprecation_note}" if image.deprecation_note else ""),
                "Deprecated images are hidden in the picker; "
                'tick "Show deprecated" or pass --show-deprecated.',
            )
        )
    if image.region_id != region.pk:
        reasons.append(
            Reason(
                image,
                f"The image is in region {image.region_id}, not {region}.",
                f"Copy it to {region} (Images → {image.name} → Copy to region).",
            )
        )
    if image.state != Image.State.AVAILABLE:
        reasons.append(
            Reason(
                image,
                f"The image is {image.get_state_display().lower()}"
                + (f": {image.last_error}" if image.last_error else "."),
                "Wait for processing to finish; a failed image must be uploaded again.",
            )
        )
    return reasons or [
        Reason(image, f"The image is offered in the picker for {project} in {region}.", "Nothing to fix.")
    ]


def _offer(image: Image, project: Project) -> str:
    if image.project_id == project.pk:
        return f"in {project}"
    if image.visibility == Image.Visibility.ACCOUNT:
        return f"org-shared across {project.account}"
    return f"shared with {project}"


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def image_named(actor, project: Project, region: Region, reference: str) -> Image:
    """The image `reference` (a name or an id) that a VM in `project` and `region` may boot from, else
    an InvalidRequest carrying the "why is my image missing?" answer."""
    offered = picker(actor, project, region, show_deprecated=True)
    by_name = Q(id=reference) | Q(name=reference) if _is_uuid(reference) else Q(name=reference)
    image = offered.filter(by_name).first()
    if image is None:
        reasons = why_missing(actor, project, region, reference)
        raise InvalidRequest(" ".join(f"{r.reason} {r.fix}" for r in reasons), field="image")
    return image


@audited("compute.vm.create-from-image")
def launch_vm(
    *,
    actor,
    project: Project,
    region: Region,
    image: Image,
    name: str,
    flavor: str,
    vpc: str,
    boot_size_bytes: int | None = None,
    tags: dict | None = None,
    start: bool = False,
) -> VM:
    """A VM whose boot volume is a copy of `image` (grown to `boot_size_bytes`), defined on a host of
    the region and started when `start`: `creating` until the region's hypervisor worker has copied
    the image and defined it (the copy is qemu-img's work, never a web request's)."""
    require(actor, Perm.OPERATE_VMS, project, "create VMs")
    compute.check_vm_request(name=name, vpc=vpc, flavor=flavor, tags=tags)  # before copying any bytes
    image = image_named(actor, project, region, str(image.pk))
    minimum = -(-(image.virtual_size or MiB) // MiB) * MiB
    size = boot_size_bytes or minimum
    if size < minimum:
        raise InvalidRequest(
            f"The boot volume must be at least the image's size, {minimum / 2**30:.2f} GiB.",
            field="boot_size_bytes",
        )
    source = local_file(image)
    attestation.check_launch(actor=actor, image=image, project=project, vm_name=name, image_file=source)
    vm = compute.create_vm(
        actor=actor,
        project=project,
        region=region,
        name=name,
        flavor=flavor,
        vpc=vpc,
        boot_size_bytes=size,
        tags={**(tags or {}), "image": image.name[:255]},
        boot_source_path=str(source),
        start=start,
    )
    return vm
