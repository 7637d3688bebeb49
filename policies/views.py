"""Console pages for snapshot policies: list the project's policies, apply one from pasted or uploaded
YAML, read and download its canonical YAML, edit it. Applying calls the same service as the API and CLI.
The list page also holds the project's notification channels (add, delete); a policy's page shows the
notifications sent about it."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from clouddigit.access import can, project_by_reference
from clouddigit.audit.log import record_invalid_form, record_refusal
from clouddigit.compute.models import Project
from clouddigit.compute.permissions import Perm
from clouddigit.errors import Conflict, InvalidRequest, ServiceError
from clouddigit.htmx import redirect_after_post
from policies import channels, drills, services, simulator
from policies.api import YAML_CONTENT_TYPE
from policies.coverage import coverage
from policies.forms import ApplyForm, ChannelForm, EditForm
from policies.models import Drill, NotificationChannel, Policy

ACTION = "policy.apply"


def _policies(user):
    return Policy.objects.visible_to(user).select_related("project__account")


def _show_error(form, field: str, error: ServiceError) -> None:
    """A mistake in the policy shows at the field the user gave it in; a refusal above the form."""
    form.add_error(field if error.field else None, error.message)


def _applied(request, policy: Policy, replaced: Policy | None = None):
    note = ""
    if replaced is not None and replaced.pk != policy.pk:
        note = f" (the YAML names {policy.name}; {replaced.name} is unchanged)"
    messages.success(request, f"Applied snapshot policy {policy.name} to {policy.project}{note}.")
    return redirect("policies:detail", pk=policy.pk)


def _list_page(
    request,
    project: Project | None,
    form: ApplyForm | None = None,
    status: int = 200,
    channel_form: ChannelForm | None = None,
    preview=None,
):
    policies = _policies(request.user).filter(project=project) if project else Policy.objects.none()
    can_manage = project is not None and can(request.user, Perm.MANAGE_POLICIES, project)
    rows = [(policy, policy.parsed) for policy in policies.order_by("name")]
    channel_rows = []
    if project is not None:
        for channel in NotificationChannel.objects.visible_to(request.user).filter(project=project):
            users = [policy.name for policy, spec in rows if spec.notify_channel == channel.name]
            channel_rows.append((channel, users))
    context = {
        "project": project,
        "rows": rows,
        "channels": channel_rows,
        "new_secret": request.session.pop(NEW_SECRET, None),
        "can_manage": can_manage,
        "form": form or (ApplyForm() if can_manage else None),
        "channel_form": channel_form or (ChannelForm() if can_manage else None),
        "preview": preview,
    }
    return render(request, "policies/list.html", context, status=status)


@login_required
def policy_list(request):
    return _list_page(request, request.scope.project if request.scope else None)


def _posted_project(request) -> Project:
    """The project the form was shown for (it says so), not whatever the switcher says now in another tab."""
    reference = request.POST.get("project")
    if reference:
        try:
            return project_by_reference(request.user, reference)
        except InvalidRequest:
            raise Http404("No such project, or you may not see it.") from None
    project = request.scope.project if request.scope else None
    if project is None:
        raise Http404("You have no project to do this in.")
    return project


@login_required
@require_POST
def apply(request):
    project = _posted_project(request)
    form = ApplyForm(request.POST, request.FILES)
    if not form.is_valid():
        record_invalid_form(actor=request.user, action=ACTION, target=project, form=form)
        return _list_page(request, project, form, status=400)
    try:
        if "preview" in request.POST:
            # The prune simulator: what this policy would keep, delete and create; nothing is saved.
            outcome = simulator.simulate(
                actor=request.user, project=project, text=form.cleaned_data["text"], days=PREVIEW_DAYS
            )
            return _list_page(request, project, form, preview=outcome)
        policy = services.apply_policy(actor=request.user, project=project, text=form.cleaned_data["text"])
    except ServiceError as error:
        _show_error(form, form.source_field, error)
        return _list_page(request, project, form, status=error.status)
    return _applied(request, policy)


PREVIEW_DAYS = 30


def _detail_page(request, policy: Policy, form: EditForm | None = None, status: int = 200):
    can_manage = can(request.user, Perm.MANAGE_POLICIES, policy.project)
    spec = policy.parsed
    context = {
        "policy": policy,
        "spec": spec,
        "yaml": services.export_policy(policy),
        "can_manage": can_manage,
        "form": form or (EditForm(initial={"yaml": policy.source}) if can_manage else None),
        "coverage": coverage(policy, timezone.now()),
        "runs": policy.runs.select_related("vm", "snapshot")[:50],
        "channel": spec.notify_channel
        and NotificationChannel.objects.filter(project=policy.project_id, name=spec.notify_channel).first(),
        "notifications": policy.notifications.order_by("-created_at", "-slot_at")[:10],
        "drills": policy.drills.all()[:20],
        "drill_trend": list(
            policy.drills.filter(state="passed")
            .order_by("-started_at")
            .values_list("seconds", flat=True)[:20]
        )[::-1],
        "delete_choices": services.SNAPSHOT_CHOICES,
        "can_drill": can(request.user, Perm.RESTORE_SNAPSHOTS, policy.project),
    }
    return render(request, "policies/detail.html", context, status=status)


@login_required
@require_POST
def drill(request, pk):
    """Run a restore drill now, on the VM in the policy's scope drilled least recently (or the one posted)."""
    policy = get_object_or_404(_policies(request.user), pk=pk)
    chosen = drills.vm_to_drill(policy, request.POST.get("vm"))
    try:
        if chosen is None:
            raise Conflict(
                "No VM in this policy's scope has an available VM snapshot yet; "
                "a drill restores the latest one."
            )
        result = drills.run_drill(actor=request.user, vm=chosen, policy=policy)
        messages.success(
            request, f"Drill started: restoring {result.snapshot_name} of {result.vm_name} to a sandbox VM."
        )
    except ServiceError as error:
        messages.error(request, str(error))
    return redirect(f"{reverse('policies:detail', args=[policy.pk])}#drills")


def _drill_act(request, pk, operation, success: str, action: str):
    """Retry or delete a drill from its row in its policy's drill history; the answer goes back there."""
    drill = get_object_or_404(Drill.objects.visible_to(request.user).select_related("project"), pk=pk)
    then = (
        f"{reverse('policies:detail', args=[drill.policy_id])}#drills"
        if drill.policy_id
        else reverse("policies:list")
    )
    try:
        operation(drill)
    except ServiceError as error:
        record_refusal(actor=request.user, action=action, target=drill, error=error)
        messages.error(request, str(error))
    else:
        messages.success(request, success.format(drill=drill))
    return redirect_after_post(request, then)


@login_required
@require_POST
def drill_retry(request, pk):
    return _drill_act(
        request,
        pk,
        lambda drill: drills.retry_drill(actor=request.user, drill=drill),
        "Running the drill of {drill.vm_name} again.",
        "policy.drill.retry",
    )


@login_required
@require_POST
def drill_delete(request, pk):
    return _drill_act(
        request,
        pk,
        lambda drill: drills.delete_drill(actor=request.user, drill=drill),
        "Deleted the failed drill of {drill.vm_name} from the history.",
        "policy.drill.delete",
    )


@login_required
def policy_detail(request, pk):
    return _detail_page(request, get_object_or_404(_policies(request.user), pk=pk))


@login_required
@require_POST
def edit(request, pk):
    policy = get_object_or_404(_policies(request.user), pk=pk)
    form = EditForm(request.POST)
    if not form.is_valid():
        record_invalid_form(actor=request.user, action=ACTION, target=policy, form=form)
        return _detail_page(request, policy, form, status=400)
    try:
        applied = services.apply_policy(
            actor=request.user, project=policy.project, text=form.cleaned_data["yaml"]
        )
    except ServiceError as error:
        _show_error(form, "yaml", error)
        return _detail_page(request, policy, form, status=error.status)
    return _applied(request, applied, replaced=policy)


@login_required
def export(request, pk):
    policy = get_object_or_404(_policies(request.user), pk=pk)
    response = HttpResponse(services.export_policy(policy), content_type=YAML_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{policy.name}.yaml"'
    return response


def _channels_url() -> str:
    return f"{reverse('policies:list')}#channels"


# A webhook's signing secret is shown once, on the page the create (or rotate) redirects to: it waits in
# the session, not in a message cookie or the URL, and the first list page takes it out.
NEW_SECRET = "policies.channel_secret"


def _show_secret_once(request, channel: NotificationChannel) -> None:
    request.session[NEW_SECRET] = {"channel": channel.name, "secret": channel.secret}


@login_required
@require_POST
def channel_create(request):
    project = _posted_project(request)
    form = ChannelForm(request.POST)
    if not form.is_valid():
        record_invalid_form(actor=request.user, action="policy.channel.create", target=project, form=form)
        return _list_page(request, project, channel_form=form, status=400)
    try:
        channel = channels.create_channel(actor=request.user, project=project, **form.cleaned_data)
    except ServiceError as error:
        form.add_error(error.field if error.field in form.fields else None, error.message)
        return _list_page(request, project, channel_form=form, status=error.status)
    messages.success(request, f"Added notification channel {channel.name} to {project}.")
    if channel.secret:
        _show_secret_once(request, channel)
    return redirect(_channels_url())


@login_required
@require_POST
def channel_rotate_secret(request, pk):
    channel = get_object_or_404(
        NotificationChannel.objects.visible_to(request.user).select_related("project__account"), pk=pk
    )
    try:
        channels.rotate_secret(actor=request.user, channel=channel)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Gave notification channel {channel.name} a new signing secret.")
        _show_secret_once(request, channel)
    return redirect_after_post(request, _channels_url())


@login_required
@require_POST
def channel_delete(request, pk):
    channel = get_object_or_404(
        NotificationChannel.objects.visible_to(request.user).select_related("project__account"), pk=pk
    )
    project, name = channel.project, channel.name
    try:
        channels.delete_channel(actor=request.user, channel=channel)
    except ServiceError as error:
        messages.error(request, error.message)
        return _list_page(request, project, status=error.status)
    messages.success(request, f"Deleted notification channel {name} from {project}.")
    return redirect(_channels_url())


@login_required
@require_POST
def delete(request, pk):
    policy = get_object_or_404(_policies(request.user), pk=pk)
    try:
        services.delete_policy(actor=request.user, policy=policy, snapshots=request.POST.get("snapshots", ""))
    except ServiceError as error:
        messages.error(request, str(error))
        return redirect("policies:detail", pk=policy.pk)
    messages.success(
        request, f"Policy {policy.name}: {services.SNAPSHOT_CHOICES[request.POST['snapshots']]}."
    )
    return redirect("policies:list")
