"""Console pages for snapshots. Every action calls the same service as the API and the CLI, through
clouddigit.console.act."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from clouddigit.access import can
from clouddigit.compute.models import VM, Region, Volume, parse_tag
from clouddigit.compute.permissions import Perm
from clouddigit.console import ConfirmForm, act, page_at, settle
from clouddigit.htmx import render_page_or_fragment
from clouddigit.listing import in_scope, list_page
from snapshots import diagnosis, replication, replication_metrics, services
from snapshots.filters import SnapshotFilter
from snapshots.forms import CopyForm, CreateForm, LimitForm, RestoreVMForm, RestoreVolumeForm, TagForm
from snapshots.models import Restore, Snapshot, SnapshotDisk


def _snapshots(user):
    return (
        Snapshot.objects.visible_to(user)
        .select_related("project__account", "region", "source_snapshot")
        .prefetch_related(Prefetch("disks", queryset=SnapshotDisk.objects.order_by("device", "volume_name")))
    )


@login_required
def snapshot_list(request):
    queryset = in_scope(_snapshots(request.user), request)
    return list_page(request, SnapshotFilter(request.GET, queryset=queryset), "snapshots/list.html")


def snapshot_context(request, snapshot: Snapshot, **forms) -> dict:
    project = snapshot.project
    restores = list(snapshot.restores.select_related("volume", "vm")[:20])
    return {
        "snapshot": snapshot,
        "disks": snapshot.disks.select_related("layer__parent", "volume"),
        "restores": restores,
        # The page polls while the snapshot or one of its restores is on its way, and reloads once it
        # has settled (clouddigit.console.settle).
        "polling": _in_progress(snapshot, restores),
        "findings": diagnosis.diagnose(snapshot),
        "warnings": services.restore_warnings(snapshot, None),
        "confirmation": services.rollback_confirmation(snapshot) if snapshot.disks.exists() else "",
        "can_operate": can(request.user, Perm.RESTORE_SNAPSHOTS, project),
        "can_delete": can(request.user, Perm.DELETE_SNAPSHOTS, project),
        "can_rollback": can(request.user, Perm.ROLLBACK_SNAPSHOTS, project),
        "can_tag": can(request.user, Perm.CREATE_SNAPSHOTS, project),
        "restore_volume_form": forms.get("restore_volume_form")
        or RestoreVolumeForm(disks=snapshot.disks.all()),
        "restore_vm_form": forms.get("restore_vm_form")
        or restore_vm_form(snapshot, initial={"vpc": snapshot.vm_definition.get("vpc", "")}),
        "rollback_form": forms.get("rollback_form") or ConfirmForm(),
        "delete_form": forms.get("delete_form") or ConfirmForm(),
        "tag_form": forms.get("tag_form") or TagForm(),
        "copy_form": forms.get("copy_form") or copy_form(snapshot),
        "copy_progress": replication.progress(snapshot) if snapshot.is_copy else None,
        "copy_charge": replication_metrics.copy_charge(snapshot) if snapshot.is_copy else None,
        "copying": replication.copying(snapshot),
    }


def copy_form(snapshot: Snapshot, *args, **kwargs) -> CopyForm:
    regions = Region.objects.exclude(pk=snapshot.region_id).order_by("slug").values_list("slug", flat=True)
    return CopyForm(*args, regions=regions, **kwargs)


def _in_progress(snapshot: Snapshot, restores: list[Restore]) -> bool:
    if snapshot.state in {Snapshot.State.CREATING, Snapshot.State.DELETING}:
        return True
    return any(r.state == Restore.State.RESTORING and not r.lease_expired for r in restores)


def snapshot_page(request, snapshot: Snapshot, **forms):
    return render(request, "snapshots/detail.html", snapshot_context(request, snapshot, **forms))


@login_required
def snapshot_detail(request, pk):
    snapshot = get_object_or_404(_snapshots(request.user), pk=pk)
    context = snapshot_context(request, snapshot)
    response = render_page_or_fragment(request, "snapshots/detail.html", "status", context)
    return settle(request, response, settled=not context["polling"])


def _on_snapshot(request, pk, *, action: str, run, success, form=None, form_key: str = "", then=None):
    """An action from a snapshot's page: its errors show on that page, at the form used."""
    snapshot = get_object_or_404(_snapshots(request.user), pk=pk)
    forms = {form_key: form} if form is not None else {}
    return act(
        request,
        action=action,
        target=snapshot,
        run=lambda: run(snapshot),
        page=lambda: snapshot_page(request, snapshot, **forms),
        success=success,
        then=then or reverse("snapshots:detail", args=[snapshot.pk]),
        form=form,
    )


@login_required
@require_POST
def restore_volume(request, pk):
    disks = SnapshotDisk.objects.filter(snapshot__in=_snapshots(request.user).filter(pk=pk))
    form = RestoreVolumeForm(request.POST, disks=disks)
    return _on_snapshot(
        request,
        pk,
        action="snapshot.restore",
        run=lambda snapshot: services.restore_to_volume(
            actor=request.user,
            snapshot=snapshot,
            name=form.cleaned_data["name"],
            disk=services.disk_named(snapshot, form.cleaned_data["disk"]),
        ),
        success=lambda result: (
            f"Restoring to new volume {result.name}: the time to restore is recorded below."
        ),
        form=form,
        form_key="restore_volume_form",
    )


def restore_vm_form(snapshot: Snapshot, *args, **kwargs) -> RestoreVMForm:
    tags, scoped = services.tag_choices(snapshot)
    return RestoreVMForm(*args, tags=tags, scoped=scoped, **kwargs)


@login_required
@require_POST
def restore_vm(request, pk):
    snapshot = get_object_or_404(_snapshots(request.user), pk=pk)
    form = restore_vm_form(snapshot, request.POST)
    return _on_snapshot(
        request,
        pk,
        action="snapshot.restore-vm",
        run=lambda snapshot: services.restore_to_vm(
            actor=request.user,
            snapshot=snapshot,
            name=form.cleaned_data["name"],
            vpc=form.cleaned_data["vpc"],
            flavor=form.cleaned_data["flavor"] or None,
            acknowledge_warnings=form.cleaned_data["acknowledge_warnings"],
            keep_tags=form.cleaned_data.get("keep_tags", []),
        ),
        success=lambda result: f"Restoring to new VM {result.name}: it starts once its volumes are ready.",
        form=form,
        form_key="restore_vm_form",
    )


@login_required
@require_POST
def rollback(request, pk):
    form = ConfirmForm(request.POST)
    return _on_snapshot(
        request,
        pk,
        action="snapshot.rollback",
        run=lambda snapshot: services.rollback(
            actor=request.user, snapshot=snapshot, confirm=form.cleaned_data["confirm"]
        ),
        success=lambda result: (
            f"Rolled back. The data it replaced is kept as safety snapshot {result.name} for 24 hours."
        ),
        form=form,
        form_key="rollback_form",
    )


@login_required
@require_POST
def delete(request, pk):
    form = ConfirmForm(request.POST)
    return _on_snapshot(
        request,
        pk,
        action="snapshot.delete",
        run=lambda snapshot: services.delete_snapshot(
            actor=request.user, snapshot=snapshot, confirm=form.cleaned_data["confirm"]
        ),
        success=lambda result: f"Deleting {result.name}: its layers merge into the volume in the background.",
        form=form,
        form_key="delete_form",
        then=reverse("snapshots:list"),
    )


@login_required
@require_POST
def copy(request, pk):
    snapshot = get_object_or_404(_snapshots(request.user), pk=pk)
    form = copy_form(snapshot, request.POST)
    return _on_snapshot(
        request,
        pk,
        action="snapshot.copy",
        run=lambda snapshot: replication.copy_snapshot(
            actor=request.user,
            snapshot=snapshot,
            target_region=form.cleaned_data["target_region"],
            name=form.cleaned_data["name"],
        ),
        success=lambda result: (
            f"Copying {snapshot.name} to {result.region_id}: this page shows its progress; it can be "
            "restored there once every byte has landed and been verified."
        ),
        form=form,
        form_key="copy_form",
        then=lambda result: reverse("snapshots:detail", args=[result.pk]),
    )


@login_required
@require_POST
def retry(request, pk):
    return _on_snapshot(
        request,
        pk,
        action="snapshot.retry",
        run=lambda snapshot: services.retry(actor=request.user, snapshot=snapshot),
        success=lambda result: f"Queued {result.name} again.",
    )


@login_required
@require_POST
def hold(request, pk):
    pin = request.POST.get("hold") != "false"
    return _on_snapshot(
        request,
        pk,
        action="snapshot.hold",
        run=lambda snapshot: services.set_hold(actor=request.user, snapshot=snapshot, hold=pin),
        success=lambda result: (
            f"{result.name} is pinned: retention will keep it."
            if pin
            else f"{result.name} is no longer pinned."
        ),
    )


@login_required
@require_POST
def tag(request, pk):
    form = TagForm(request.POST)

    def apply(snapshot):
        add = {}
        if form.cleaned_data["add"]:
            try:
                key, value = parse_tag(form.cleaned_data["add"])
            except ValidationError as error:
                raise services.InvalidRequest(error.messages[0], field="add") from None
            add = {key: value}
        remove = [form.cleaned_data["remove"].strip()] if form.cleaned_data["remove"] else []
        return services.set_tags(actor=request.user, snapshot=snapshot, add=add, remove=remove)

    return _on_snapshot(
        request,
        pk,
        action="snapshot.tag",
        run=apply,
        success=lambda result: f"Tags of {result.name} updated.",
        form=form,
        form_key="tag_form",
    )


# A restore's Retry and Delete sit in its row on its snapshot's page: (service, audit action, message).
RESTORE_ACTIONS = {
    "retry": (
        services.retry_restore,
        "snapshot.restore.retry",
        "Queued the restore to {restore.name} again: the files it already made are reused.",
    ),
    "delete": (
        services.delete_restore,
        "snapshot.restore.delete",
        "Deleted the failed restore to {restore.name} and what it had begun to make.",
    ),
}


@login_required
@require_POST
def restore_action(request, pk, action):
    restore = get_object_or_404(Restore.objects.visible_to(request.user), pk=pk)
    service, audit_action, success = RESTORE_ACTIONS[action]
    snapshot = _snapshots(request.user).filter(pk=restore.snapshot_id).first()
    then = (
        f"{reverse('snapshots:detail', args=[snapshot.pk])}#restores"
        if snapshot
        else reverse("snapshots:list")
    )
    return act(
        request,
        action=audit_action,
        target=restore,
        run=lambda: service(actor=request.user, restore=restore),
        page=lambda: snapshot_page(request, snapshot) if snapshot else snapshot_list(request),
        success=success.format(restore=restore),
        then=then,
        confirm=f"Delete the failed restore to {restore.name}? What it began to make is deleted with it."
        if action == "delete"
        else "",
    )


# The forms below sit in this app's panels on the compute pages (templatetags/snapshot_panels.py): a
# refusal is shown there, at the form, by `page_at`.


@login_required
@require_POST
def create_for_vm(request, pk):
    vm = get_object_or_404(VM.objects.visible_to(request.user).select_related("project__account"), pk=pk)
    return _create(request, {"vm": vm}, reverse("compute:vm-detail", args=[vm.pk]))


@login_required
@require_POST
def create_for_volume(request, pk):
    volume = get_object_or_404(
        Volume.objects.visible_to(request.user).select_related("project__account"), pk=pk
    )
    return _create(request, {"volume": volume}, reverse("compute:volume-detail", args=[volume.pk]))


def _create(request, source: dict, page_url: str):
    form = CreateForm(request.POST)
    return act(
        request,
        action="snapshot.create",
        target=next(iter(source.values())),
        run=lambda: services.create_snapshot(
            actor=request.user,
            name=form.cleaned_data["name"],
            consistency=form.cleaned_data["consistency"] or Snapshot.Consistency.APPLICATION,
            **source,
        ),
        page=lambda: page_at(request, page_url, snapshot_form=form),
        form=form,
        success=lambda snapshot: f"Snapshot {snapshot.name} is being created.",
        then=lambda snapshot: reverse("snapshots:detail", args=[snapshot.pk]),
    )


@login_required
@require_POST
def raise_volume_limit(request, pk):
    volume = get_object_or_404(
        Volume.objects.visible_to(request.user).select_related("project__account"), pk=pk
    )
    form = LimitForm(request.POST)
    page_url = reverse("compute:volume-detail", args=[volume.pk])
    return act(
        request,
        action="snapshot.limit.raise",
        target=volume,
        run=lambda: services.raise_limit(
            actor=request.user,
            volume=volume,
            limit=form.cleaned_data["limit"],
            ticket=form.cleaned_data["ticket"],
        ),
        page=lambda: page_at(request, page_url, limit_form=form),
        form=form,
        success=lambda result: f"Volume {volume.name} may now keep {form.cleaned_data['limit']} snapshots.",
        then=page_url,
    )
