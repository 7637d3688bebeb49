from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from clouddigit.access import can
from clouddigit.compute import hooks, services
from clouddigit.compute.filters import VMFilter, VolumeFilter
from clouddigit.compute.forms import (
    AttachForm,
    DeleteVMForm,
    DeleteVolumeForm,
    ResizeForm,
    TagsForm,
    VolumeCreateForm,
)
from clouddigit.compute.models import VM, Region, Volume
from clouddigit.compute.permissions import Perm
from clouddigit.console import act, settle
from clouddigit.htmx import render_page_or_fragment
from clouddigit.listing import in_scope, list_page


@login_required
def vm_list(request):
    volume_counts = (
        Volume.objects.filter(vm=OuterRef("pk")).order_by().values("vm").annotate(n=Count("pk")).values("n")
    )
    queryset = (
        VM.objects.visible_to(request.user)
        .select_related("region", "host")
        # A correlated subquery counts volumes for the shown page only; Count() would group every row.
        .annotate(volume_count=Coalesce(Subquery(volume_counts), 0))
        .order_by("name", "id")
    )
    return list_page(
        request, VMFilter(request.GET, queryset=in_scope(queryset, request)), "compute/vm_list.html"
    )


def _vms(user):
    return VM.objects.visible_to(user).select_related("project__account", "region", "host")


def vm_context(request, vm: VM, **forms) -> dict:
    volumes = list(vm.volumes.order_by("device"))
    return {
        "vm": vm,
        "volumes": volumes,
        "can_operate": can(request.user, Perm.OPERATE_VMS, vm.project),
        "boot_problems": boot_problems(vm, volumes),
        "tags_form": forms.get("tags_form") or TagsForm(initial={"tags": vm.tags}),
        "delete_form": forms.get("delete_form") or DeleteVMForm(volumes=volumes),
    }


def boot_problems(vm: VM, volumes: list[Volume]) -> list[dict]:
    """The spec's "No bootable device" row, as the page can see it: a boot volume attached as something
    other than vda/sda (the fix is one action: attach it as boot), or no boot volume at all."""
    boot_device = "sda" if vm.flavor_spec.bare_metal else "vda"
    problems = [
        {
            "volume": volume,
            "text": f'"No bootable device": boot volume {volume.name} is attached as {volume.device}, '
            f"not {boot_device}. Detach it and attach it again as the boot disk.",
        }
        for volume in volumes
        if volume.bootable and volume.device not in {"vda", "sda"}
    ]
    if volumes and not any(volume.bootable for volume in volumes):
        problems.append(
            {
                "volume": None,
                "text": f'"No bootable device": no boot volume is attached. Attach one as {boot_device}.',
            }
        )
    return problems


@login_required
def vm_detail(request, pk):
    vm = get_object_or_404(_vms(request.user), pk=pk)
    response = render_page_or_fragment(request, "compute/vm_detail.html", "power", vm_context(request, vm))
    return settle(request, response, settled=not vm.in_transition)


def vm_page(request, vm: VM, **forms):
    return render(request, "compute/vm_detail.html", vm_context(request, vm, **forms))


POWER = {
    "start": (services.start_vm, "compute.vm.start"),
    "stop": (services.stop_vm, "compute.vm.stop"),
    "retry": (services.retry_vm, "compute.vm.retry"),
}


@login_required
@require_POST
def vm_power(request, pk, action):
    vm = get_object_or_404(_vms(request.user), pk=pk)
    operation, audit_action = POWER[action]
    return act(
        request,
        action=audit_action,
        target=vm,
        run=lambda: operation(actor=request.user, vm=vm),
        page=lambda: vm_page(request, vm),
        success=lambda result: f"VM {vm.name} is {vm.get_state_display().lower()}.",
        then=reverse("compute:vm-detail", args=[vm.pk]),
    )


@login_required
@require_POST
def vm_delete(request, pk):
    vm = get_object_or_404(_vms(request.user), pk=pk)
    form = DeleteVMForm(request.POST, volumes=vm.volumes.order_by("device"))
    return act(
        request,
        action="compute.vm.delete",
        target=vm,
        run=lambda: services.delete_vm(
            actor=request.user, vm=vm, confirm=form.cleaned_data["confirm"], volumes=form.fates()
        ),
        page=lambda: vm_page(request, vm, delete_form=form),
        form=form,
        success=lambda result: (
            f"Deleting VM {vm.name}: its domain and the volumes not kept are removed in the background."
        ),
        then=reverse("compute:vm-list"),
    )


@login_required
@require_POST
def vm_tags(request, pk):
    vm = get_object_or_404(_vms(request.user), pk=pk)
    form = TagsForm(request.POST)
    return act(
        request,
        action="compute.vm.tag",
        target=vm,
        run=lambda: services.set_vm_tags(actor=request.user, vm=vm, tags=form.cleaned_data["tags"]),
        page=lambda: vm_page(request, vm, tags_form=form),
        form=form,
        success=lambda result: f"Tags of VM {vm.name} updated.",
        then=reverse("compute:vm-detail", args=[vm.pk]),
    )


@login_required
def volume_list(request, create_form: VolumeCreateForm | None = None):
    queryset = Volume.objects.visible_to(request.user).select_related("region", "vm").order_by("name", "id")
    scope = request.scope
    project = scope.project if scope else None
    extra = {
        "create_form": create_form or VolumeCreateForm(),
        "can_create": project is not None and can(request.user, Perm.OPERATE_VMS, project),
        "create_region": (scope.region.slug if scope and scope.region else settings.DEFAULT_REGION),
    }
    return list_page(
        request,
        VolumeFilter(request.GET, queryset=in_scope(queryset, request)),
        "compute/volume_list.html",
        extra=extra,
    )


def volume_context(request, volume: Volume, **forms) -> dict:
    # The chain as recorded when it last changed (clouddigit.compute.recorded_chain): reading it here
    # would run qemu-img inside the request.
    holdings = hooks.holdings(volume) if volume.state != Volume.State.DELETING else []
    vms = VM.objects.visible_to(request.user).filter(project=volume.project_id, region=volume.region_id)
    return {
        "volume": volume,
        "can_operate": can(request.user, Perm.OPERATE_VMS, volume.project),
        "attach_form": forms.get("attach_form") or AttachForm(vms=vms.order_by("name")),
        "resize_form": forms.get("resize_form") or ResizeForm(),
        "delete_form": forms.get("delete_form") or DeleteVolumeForm(),
        "holdings": holdings,
        "tags_form": forms.get("tags_form") or TagsForm(initial={"tags": volume.tags}),
        # A restored volume: the spec's boot recovery is one action from here (attach it to a known-good
        # VM as a secondary disk, mount, inspect).
        "restored": "restored-from" in volume.tags,
    }


def _volumes(user):
    return Volume.objects.visible_to(user).select_related("project__account", "region", "vm")


@login_required
def volume_detail(request, pk):
    volume = get_object_or_404(_volumes(request.user), pk=pk)
    response = render_page_or_fragment(
        request, "compute/volume_detail.html", "state", volume_context(request, volume)
    )
    return settle(request, response, settled=not volume.in_transition)


@login_required
@require_POST
def volume_create(request):
    form = VolumeCreateForm(request.POST)
    scope = request.scope
    project = scope.project if scope else None
    if project is None:
        raise Http404("No project to create the volume in.")
    return act(
        request,
        action="compute.volume.create",
        target=project,
        run=lambda: services.create_empty_volume(
            actor=request.user,
            project=project,
            region=scope.region or Region.objects.get(pk=settings.DEFAULT_REGION),
            name=form.cleaned_data["name"],
            size_gib=form.cleaned_data["size_gib"],
        ),
        page=lambda: volume_list(request, create_form=form),
        form=form,
        success=lambda volume: f"Creating volume {volume.name}: it is ready to attach once available.",
        then=lambda volume: reverse("compute:volume-detail", args=[volume.pk]),
    )


def _on_volume(request, pk, *, action: str, run, success, form=None, form_key: str = "", confirm: str = ""):
    """An action from a volume's page: its errors show on that page, at the form used."""
    volume = get_object_or_404(_volumes(request.user), pk=pk)
    forms = {form_key: form} if form is not None else {}
    detail = reverse("compute:volume-detail", args=[volume.pk])
    then = reverse("compute:volume-list") if action == "compute.volume.delete" else detail
    return act(
        request,
        action=action,
        target=volume,
        run=lambda: run(volume),
        page=lambda: render(request, "compute/volume_detail.html", volume_context(request, volume, **forms)),
        success=success,
        then=then,
        form=form,
        confirm=confirm,
    )


@login_required
@require_POST
def volume_attach(request, pk):
    form = AttachForm(request.POST)
    return _on_volume(
        request,
        pk,
        action="compute.volume.attach",
        run=lambda volume: services.attach_volume_to(
            actor=request.user,
            volume=volume,
            vm=form.cleaned_data["vm"],
            boot=form.cleaned_data["role"] == "boot",
            device=form.cleaned_data["device"],
        ),
        success=lambda volume: f"Volume {volume.name} is attached to {volume.vm.name} as {volume.device}.",
        form=form,
        form_key="attach_form",
    )


@login_required
@require_POST
def volume_detach(request, pk):
    return _on_volume(
        request,
        pk,
        action="compute.volume.detach",
        run=lambda volume: services.detach_volume(actor=request.user, volume=volume),
        success=lambda volume: f"Detaching {volume.name}: it is available once the hypervisor has let it go.",
        confirm="Detach this volume from its VM? Unmount it inside the guest first.",
    )


@login_required
@require_POST
def volume_retry(request, pk):
    return _on_volume(
        request,
        pk,
        action="compute.volume.retry",
        run=lambda volume: services.retry_volume(actor=request.user, volume=volume),
        success=lambda volume: f"Creating volume {volume.name} again.",
    )


@login_required
@require_POST
def volume_resize(request, pk):
    form = ResizeForm(request.POST)
    return _on_volume(
        request,
        pk,
        action="compute.volume.resize",
        run=lambda volume: services.resize_volume(
            actor=request.user, volume=volume, size_gib=form.cleaned_data["size_gib"]
        ),
        success=lambda volume: (
            f"Growing volume {volume.name} to {(volume.resize_to_bytes or 0) / 2**30:g} GiB; once done, grow "
            "its file system inside the guest."
        ),
        form=form,
        form_key="resize_form",
    )


@login_required
@require_POST
def volume_delete(request, pk):
    form = DeleteVolumeForm(request.POST)
    return _on_volume(
        request,
        pk,
        action="compute.volume.delete",
        run=lambda volume: services.delete_volume(
            actor=request.user,
            volume=volume,
            confirm=form.cleaned_data["confirm"],
            snapshots=form.cleaned_data["snapshots"],
        ),
        success=lambda volume: f"Deleting volume {volume.name}.",
        form=form,
        form_key="delete_form",
    )


@login_required
@require_POST
def volume_tags(request, pk):
    form = TagsForm(request.POST)
    return _on_volume(
        request,
        pk,
        action="compute.volume.tag",
        run=lambda volume: services.set_volume_tags(
            actor=request.user, volume=volume, tags=form.cleaned_data["tags"]
        ),
        success=lambda volume: f"Tags of volume {volume.name} updated.",
        form=form,
        form_key="tags_form",
    )
