from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from clouddigit.access import can
from clouddigit.compute import services
from clouddigit.compute.filters import VMFilter, VolumeFilter
from clouddigit.compute.models import VM, Volume
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


def vm_context(request, vm: VM) -> dict:
    return {
        "vm": vm,
        "volumes": vm.volumes.order_by("device"),
        "can_operate": can(request.user, Perm.OPERATE_VMS, vm.project),
    }


@login_required
def vm_detail(request, pk):
    vm = get_object_or_404(_vms(request.user), pk=pk)
    response = render_page_or_fragment(request, "compute/vm_detail.html", "power", vm_context(request, vm))
    return settle(request, response, settled=not vm.in_transition)


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
        page=lambda: render(request, "compute/vm_detail.html", vm_context(request, vm)),
        success=lambda result: f"VM {vm.name} is {vm.get_state_display().lower()}.",
        then=reverse("compute:vm-detail", args=[vm.pk]),
    )


@login_required
def volume_list(request):
    queryset = Volume.objects.visible_to(request.user).select_related("region", "vm").order_by("name", "id")
    return list_page(
        request, VolumeFilter(request.GET, queryset=in_scope(queryset, request)), "compute/volume_list.html"
    )


def volume_context(request, volume: Volume) -> dict:
    # The chain as recorded when it last changed (clouddigit.compute.recorded_chain): reading it here
    # would run qemu-img inside the request.
    return {"volume": volume}


@login_required
def volume_detail(request, pk):
    volume = get_object_or_404(
        Volume.objects.visible_to(request.user).select_related("project__account", "region", "vm"), pk=pk
    )
    return render(request, "compute/volume_detail.html", volume_context(request, volume))
