"""Console pages for snapshots. Every action calls the same service as the API and the CLI."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from clouddigit.access import can
from clouddigit.audit.log import Target, record, record_refusal
from clouddigit.audit.models import AuditEntry
from clouddigit.compute.models import VM, Volume, parse_tag
from clouddigit.compute.permissions import Perm
from clouddigit.errors import ServiceError
from clouddigit.htmx import redirect_after_post, render_page_or_fragment
from clouddigit.listing import in_scope, list_page
from snapshots import diagnosis, services
from snapshots.filters import SnapshotFilter
from snapshots.forms import CreateForm, LimitForm, RestoreVMForm, RestoreVolumeForm, RollbackForm, TagForm
from snapshots.models import Restore, Snapshot, SnapshotDisk


def _snapshots(user):
    return (
        Snapshot.objects.visible_to(user)
        .select_related("project__account", "region")
        .prefetch_related(Prefetch("disks", queryset=SnapshotDisk.objects.order_by("device", "volume_name")))
    )


@login_required
def snapshot_list(request):
    queryset = in_scope(_snapshots(request.user), request)
    return list_page(request, SnapshotFilter(request.GET, queryset=queryset), "snapshots/list.html")


def snapshot_context(request, snapshot: Snapshot, **forms) -> dict:
    project = snapshot.project
    return {
        "snapshot": snapshot,
        "disks": snapshot.disks.select_related("layer__parent", "volume"),
        "restores": snapshot.restores.select_related("volume", "vm")[:20],
        "findings": diagnosis.diagnose(snapshot),
        "warnings": services.restore_warnings(snapshot, None),
        "confirmation": services.rollback_confirmation(snapshot) if snapshot.disks.exists() else "",
        "can_operate": can(request.user, Perm.RESTORE_SNAPSHOTS, project),
        "can_delete": can(request.user, Perm.DELETE_SNAPSHOTS, project),
        "can_rollback": can(request.user, Perm.ROLLBACK_SNAPSHOTS, project),
        "can_tag": can(request.user, Perm.CREATE_SNAPSHOTS, project),
        "restore_volume_form": forms.get("restore_volume_form") or RestoreVolumeForm(),
        "restore_vm_form": forms.get("restore_vm_form")
        or RestoreVMForm(initial={"vpc": snapshot.vm_definition.get("vpc", "")}),
        "rollback_form": forms.get("rollback_form") or RollbackForm(),
        "tag_form": TagForm(),
    }


@login_required
def snapshot_detail(request, pk):
    snapshot = get_object_or_404(_snapshots(request.user), pk=pk)
    response = render_page_or_fragment(
        request, "snapshots/detail.html", "status", snapshot_context(request, snapshot)
    )
    if request.htmx and not request.htmx.boosted and snapshot.state not in {"creating", "deleting"}:
        response.status_code = 286  # settled: htmx stops polling
    return response


def _act(request, snapshot, form, operation, success: str, form_key: str, then: str = "snapshots:detail"):
    """Run a service from a posted form; on error show the page again with the message where the user
    acted (400/409), on success redirect (post/redirect/get)."""
    if form is not None and not form.is_valid():
        record(
            actor=request.user,
            action=f"snapshot.{form_key.removesuffix('_form').replace('_', '-')}",
            outcome=AuditEntry.Outcome.REFUSED,
            target=Target.of(snapshot),
            message="; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()),
        )
        return render(
            request,
            "snapshots/detail.html",
            snapshot_context(request, snapshot, **{form_key: form}),
            status=400,
        )
    try:
        result = operation()
    except ServiceError as error:
        if form is not None:
            form.add_error(error.field if error.field in form.fields else None, error.message)
            context = snapshot_context(request, snapshot, **{form_key: form})
            return render(request, "snapshots/detail.html", context, status=error.status)
        messages.error(request, str(error))
        return redirect_after_post(request, reverse("snapshots:detail", args=[snapshot.pk]))
    messages.success(request, success.format(result=result))
    url = reverse(then, args=[snapshot.pk]) if then == "snapshots:detail" else reverse(then)
    return redirect_after_post(request, url)


@login_required
@require_POST
def restore_volume(request, pk):
    snapshot = get_object_or_404(_snapshots(request.user), pk=pk)
    form = RestoreVolumeForm(request.POST)
    return _act(
        request,
        snapshot,
        form,
        lambda: services.restore_to_volume(
            actor=request.user, snapshot=snapshot, name=form.cleaned_data["name"]
        ),
        "Restoring to new volume {result.name}: the time to restore is recorded below.",
        "restore_volume_form",
    )


@login_required
@require_POST
def restore_vm(request, pk):
    snapshot = get_object_or_404(_snapshots(request.user), pk=pk)
    form = RestoreVMForm(request.POST)
    return _act(
        request,
        snapshot,
        form,
        lambda: services.restore_to_vm(
            actor=request.user,
            snapshot=snapshot,
            name=form.cleaned_data["name"],
            vpc=form.cleaned_data["vpc"],
            flavor=form.cleaned_data["flavor"] or None,
            acknowledge_warnings=form.cleaned_data["acknowledge_warnings"],
        ),
        "Restoring to new VM {result.name}: it starts once its volumes are ready.",
        "restore_vm_form",
    )


@login_required
@require_POST
def rollback(request, pk):
    snapshot = get_object_or_404(_snapshots(request.user), pk=pk)
    form = RollbackForm(request.POST)
    return _act(
        request,
        snapshot,
        form,
        lambda: services.rollback(
            actor=request.user, snapshot=snapshot, confirm=form.cleaned_data["confirm"]
        ),
        "Rolled back. The data it replaced is kept as safety snapshot {result.name} for 24 hours.",
        "rollback_form",
    )


@login_required
@require_POST
def delete(request, pk):
    snapshot = get_object_or_404(_snapshots(request.user), pk=pk)
    return _act(
        request,
        snapshot,
        None,
        lambda: services.delete_snapshot(actor=request.user, snapshot=snapshot),
        "Deleting {result.name}: its layers merge into the volume in the background.",
        "",
        then="snapshots:list",
    )


@login_required
@require_POST
def retry(request, pk):
    snapshot = get_object_or_404(_snapshots(request.user), pk=pk)
    return _act(
        request,
        snapshot,
        None,
        lambda: services.retry(actor=request.user, snapshot=snapshot),
        "Queued {result.name} again.",
        "",
    )


def _restore_act(request, pk, operation, success: str, action: str):
    """Retry or delete a restore from its row on its snapshot's page; the answer goes back there."""
    restore = get_object_or_404(Restore.objects.visible_to(request.user), pk=pk)
    then = (
        reverse("snapshots:detail", args=[restore.snapshot_id]) + "#restores"
        if restore.snapshot_id
        else reverse("snapshots:list")
    )
    try:
        operation(restore)
    except ServiceError as error:
        record_refusal(actor=request.user, action=action, target=restore, error=error)
        messages.error(request, str(error))
    else:
        messages.success(request, success.format(restore=restore))
    return redirect_after_post(request, then)


@login_required
@require_POST
def retry_restore(request, pk):
    return _restore_act(
        request,
        pk,
        lambda restore: services.retry_restore(actor=request.user, restore=restore),
        "Queued the restore to {restore.name} again: the files it already made are reused.",
        "snapshot.restore.retry",
    )


@login_required
@require_POST
def delete_restore(request, pk):
    return _restore_act(
        request,
        pk,
        lambda restore: services.delete_restore(actor=request.user, restore=restore),
        "Deleted the failed restore to {restore.name} and what it had begun to make.",
        "snapshot.restore.delete",
    )


@login_required
@require_POST
def hold(request, pk):
    snapshot = get_object_or_404(_snapshots(request.user), pk=pk)
    pin = request.POST.get("hold") != "false"
    return _act(
        request,
        snapshot,
        None,
        lambda: services.set_hold(actor=request.user, snapshot=snapshot, hold=pin),
        "{result.name} is pinned: retention will keep it." if pin else "{result.name} is no longer pinned.",
        "",
    )


@login_required
@require_POST
def tag(request, pk):
    snapshot = get_object_or_404(_snapshots(request.user), pk=pk)
    form = TagForm(request.POST)
    form.is_valid()

    def apply():
        add = {}
        if form.cleaned_data.get("add"):
            try:
                key, value = parse_tag(form.cleaned_data["add"])
            except ValidationError as error:
                raise services.InvalidRequest(error.messages[0], field="tags") from None
            add = {key: value}
        remove = [form.cleaned_data["remove"].strip()] if form.cleaned_data.get("remove") else []
        return services.set_tags(actor=request.user, snapshot=snapshot, add=add, remove=remove)

    return _act(request, snapshot, None, apply, "Tags of {result.name} updated.", "")


@login_required
@require_POST
def create_for_vm(request, pk):
    vm = get_object_or_404(VM.objects.visible_to(request.user), pk=pk)
    return _create(request, {"vm": vm}, redirect_to=("compute:vm-detail", vm.pk))


@login_required
@require_POST
def create_for_volume(request, pk):
    volume = get_object_or_404(Volume.objects.visible_to(request.user), pk=pk)
    return _create(request, {"volume": volume}, redirect_to=("compute:volume-detail", volume.pk))


def _create(request, source: dict, redirect_to: tuple):
    form = CreateForm(request.POST)
    if not form.is_valid():
        message = "; ".join(" ".join(errors) for errors in form.errors.values())
        record(
            actor=request.user,
            action="snapshot.create",
            outcome=AuditEntry.Outcome.REFUSED,
            message=message,
            target=Target.of(next(iter(source.values()))),
        )
        messages.error(request, message)
        return redirect(*redirect_to)
    try:
        snapshot = services.create_snapshot(
            actor=request.user,
            name=form.cleaned_data["name"],
            consistency=form.cleaned_data["consistency"] or Snapshot.Consistency.APPLICATION,
            **source,
        )
    except ServiceError as error:
        messages.error(request, str(error))
        return redirect(*redirect_to)
    messages.success(request, f"Snapshot {snapshot.name} is being created.")
    return redirect("snapshots:detail", pk=snapshot.pk)


@login_required
@require_POST
def raise_volume_limit(request, pk):
    volume = get_object_or_404(Volume.objects.visible_to(request.user), pk=pk)
    form = LimitForm(request.POST)
    try:
        if not form.is_valid():
            raise services.InvalidRequest(
                "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()),
                field="limit",
            )
        services.raise_limit(
            actor=request.user,
            volume=volume,
            limit=form.cleaned_data["limit"],
            ticket=form.cleaned_data["ticket"],
        )
        messages.success(
            request, f"Volume {volume.name} may now keep {form.cleaned_data['limit']} snapshots."
        )
    except ServiceError as error:
        if not getattr(error, "audited", False):
            record(
                actor=request.user,
                action="snapshot.limit.raise",
                outcome=AuditEntry.Outcome.REFUSED,
                target=Target.of(volume),
                message=error.message,
            )
        messages.error(request, str(error))
    return redirect("compute:volume-detail", pk=volume.pk)
