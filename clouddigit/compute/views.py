from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from clouddigit.access import can
from clouddigit.backends import volumes as volume_files
from clouddigit.compute import services
from clouddigit.compute.filters import VMFilter, VolumeFilter
from clouddigit.compute.forms import DeleteVMForm, TagsForm
from clouddigit.compute.models import VM, Volume
from clouddigit.compute.permissions import Perm
from clouddigit.console import act, settle
from clouddigit.htmx import render_page_or_fragment
from clouddigit.listing import in_scope, list_page
from snapshots.forms import CreateForm
from snapshots.models import Snapshot
from snapshots.services import snapshot_limit


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


def vm_context(request, vm: VM, snapshot_form: CreateForm | None = None, **forms) -> dict:
    volumes = list(vm.volumes.order_by("device"))
    return {
        "vm": vm,
        "volumes": volumes,
        "can_operate": can(request.user, Perm.OPERATE_VMS, vm.project),
        "boot_problems": boot_problems(vm, volumes),
        "tags_form": forms.get("tags_form") or TagsForm(initial={"tags": vm.tags}),
        "delete_form": forms.get("delete_form") or DeleteVMForm(volumes=volumes),
        **_snapshots_of(request.user, vm.project, snapshot_form, vm=vm),
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
@require_POST
def volume_tags(request, pk):
    volume = get_object_or_404(_volumes(request.user), pk=pk)
    form = TagsForm(request.POST)
    return act(
        request,
        action="compute.volume.tag",
        target=volume,
        run=lambda: services.set_volume_tags(
            actor=request.user, volume=volume, tags=form.cleaned_data["tags"]
        ),
        page=lambda: render(
            request, "compute/volume_detail.html", volume_context(request, volume, tags_form=form)
        ),
        form=form,
        success=lambda result: f"Tags of volume {volume.name} updated.",
        then=reverse("compute:volume-detail", args=[volume.pk]),
    )


def _volumes(user):
    return Volume.objects.visible_to(user).select_related("project__account", "region", "vm")


@login_required
def volume_list(request):
    queryset = Volume.objects.visible_to(request.user).select_related("region", "vm").order_by("name", "id")
    return list_page(
        request, VolumeFilter(request.GET, queryset=in_scope(queryset, request)), "compute/volume_list.html"
    )


def volume_context(request, volume: Volume, snapshot_form=None, limit_form=None, tags_form=None) -> dict:
    chain, file_error = [], ""
    try:
        layers = volume_files.backing_chain(volume.path)
    except volume_files.VolumeError as error:
        file_error = str(error)
    else:
        chain = [
            {
                "file": layer["filename"],
                "virtual_size": layer.get("virtual-size"),
                "actual_size": layer.get("actual-size"),
                "backing": layer.get("backing-filename", ""),
            }
            for layer in layers
        ]
    return {
        "volume": volume,
        "chain": chain,
        "file_error": file_error,
        "snapshot_limit": snapshot_limit(volume),
        "can_raise_limit": can(request.user, Perm.MANAGE_SNAPSHOT_QUOTAS, volume.project),
        "limit_form": limit_form,
        "tags_form": tags_form or TagsForm(initial={"tags": volume.tags}),
        "can_operate": can(request.user, Perm.OPERATE_VMS, volume.project),
        # A restored volume: the spec's boot recovery is one action from here (attach it to a known-good
        # VM as a secondary disk, mount, inspect).
        "restored": "restored-from" in volume.tags,
        **_snapshots_of(request.user, volume.project, snapshot_form, disks__volume=volume),
    }


@login_required
def volume_detail(request, pk):
    volume = get_object_or_404(
        Volume.objects.visible_to(request.user).select_related("project__account", "region", "vm"), pk=pk
    )
    return render(request, "compute/volume_detail.html", volume_context(request, volume))


def _snapshots_of(user, project, snapshot_form: CreateForm | None, **lookup) -> dict:
    """The newest snapshots of a VM or volume, and the form to take one (snapshots app)."""
    return {
        "snapshots": Snapshot.objects.visible_to(user).filter(**lookup).distinct()[:10],
        "can_snapshot": can(user, Perm.CREATE_SNAPSHOTS, project),
        "snapshot_form": snapshot_form or CreateForm(),
    }
