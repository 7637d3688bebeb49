"""Console pages for snapshot policies: list the project's policies, apply one from pasted or uploaded
YAML, read and download its canonical YAML, edit it. Applying calls the same service as the API and CLI.
The list page also holds the project's notification channels (add, delete); a policy's page shows the
notifications sent about it."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from clouddigit.access import can, project_by_reference
from clouddigit.compute.models import Project
from clouddigit.compute.permissions import Perm
from clouddigit.console import act
from clouddigit.errors import Conflict, InvalidRequest, ServiceError
from policies import channels, drills, services, simulator
from policies.api import YAML_CONTENT_TYPE
from policies.coverage import coverage
from policies.forms import ApplyForm, ChannelForm, DeleteForm, EditForm
from policies.models import Drill, NotificationChannel, Policy

ACTION = "policy.apply"


def _policies(user):
    return Policy.objects.visible_to(user).select_related("project__account")


def _applied(policy: Policy, replaced: Policy | None = None) -> str:
    note = ""
    if replaced is not None and replaced.pk != policy.pk:
        note = f" (the YAML names {policy.name}; {replaced.name} is unchanged)"
    return f"Applied snapshot policy {policy.name} to {policy.project}{note}."


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
    if "preview" in request.POST:
        return _preview(request, project, form)
    return act(
        request,
        action=ACTION,
        target=project,
        run=lambda: services.apply_policy(
            actor=request.user, project=project, text=form.cleaned_data["text"]
        ),
        page=lambda: _list_page(request, project, form),
        form=form,
        success=_applied,
        then=lambda policy: reverse("policies:detail", args=[policy.pk]),
    )


def _preview(request, project: Project, form: ApplyForm):
    """The prune simulator: what this policy would keep, delete and create; nothing is saved, so
    nothing is audited."""
    if not form.is_valid():
        return _list_page(request, project, form, status=400)
    try:
        outcome = simulator.simulate(
            actor=request.user, project=project, text=form.cleaned_data["text"], days=PREVIEW_DAYS
        )
    except ServiceError as error:
        form.add_error(form.source_field if error.field else None, error.message)
        return _list_page(request, project, form, status=error.status)
    return _list_page(request, project, form, preview=outcome)


PREVIEW_DAYS = 30


def _detail_page(request, policy: Policy, form: EditForm | None = None, status: int = 200, delete_form=None):
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
        "delete_form": delete_form or DeleteForm(),
        "can_drill": can(request.user, Perm.RESTORE_SNAPSHOTS, policy.project),
    }
    return render(request, "policies/detail.html", context, status=status)


@login_required
@require_POST
def drill(request, pk):
    """Run a restore drill now, on the VM in the policy's scope drilled least recently (or the one posted)."""
    policy = get_object_or_404(_policies(request.user), pk=pk)

    def run():
        chosen = drills.vm_to_drill(policy, request.POST.get("vm"))
        if chosen is None:
            raise Conflict(
                "No VM in this policy's scope has an available VM snapshot yet; "
                "a drill restores the latest one."
            )
        return drills.run_drill(actor=request.user, vm=chosen, policy=policy)

    return act(
        request,
        action="policy.drill",
        target=policy,
        run=run,
        page=lambda: _detail_page(request, policy),
        success=lambda result: (
            f"Drill started: restoring {result.snapshot_name} of {result.vm_name} to a sandbox VM."
        ),
        then=f"{reverse('policies:detail', args=[policy.pk])}#drills",
    )


# A drill's Retry and Delete sit in its row of its policy's drill history: (service, message, question).
DRILL_ACTIONS = {
    "retry": (drills.retry_drill, "Running the drill of {drill.vm_name} again.", ""),
    "delete": (
        drills.delete_drill,
        "Deleted the failed drill of {drill.vm_name} from the history.",
        "Delete the failed drill of {drill.vm_name}? Its result leaves the history.",
    ),
}


@login_required
@require_POST
def drill_action(request, pk, action):
    drill = get_object_or_404(Drill.objects.visible_to(request.user).select_related("project"), pk=pk)
    service, success, confirm = DRILL_ACTIONS[action]
    policy = _policies(request.user).filter(pk=drill.policy_id).first()
    then = f"{reverse('policies:detail', args=[policy.pk])}#drills" if policy else reverse("policies:list")
    return act(
        request,
        action=f"policy.drill.{action}",
        target=drill,
        run=lambda: service(actor=request.user, drill=drill),
        page=lambda: _detail_page(request, policy) if policy else policy_list(request),
        success=success.format(drill=drill),
        then=then,
        confirm=confirm.format(drill=drill),
    )


@login_required
def policy_detail(request, pk):
    return _detail_page(request, get_object_or_404(_policies(request.user), pk=pk))


@login_required
@require_POST
def edit(request, pk):
    policy = get_object_or_404(_policies(request.user), pk=pk)
    form = EditForm(request.POST)
    return act(
        request,
        action=ACTION,
        target=policy,
        run=lambda: services.apply_policy(
            actor=request.user, project=policy.project, text=form.cleaned_data["yaml"]
        ),
        page=lambda: _detail_page(request, policy, form),
        form=form,
        success=lambda applied: _applied(applied, replaced=policy),
        then=lambda applied: reverse("policies:detail", args=[applied.pk]),
    )


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


def _channel(request, pk) -> NotificationChannel:
    return get_object_or_404(
        NotificationChannel.objects.visible_to(request.user).select_related("project__account"), pk=pk
    )


@login_required
@require_POST
def channel_create(request):
    project = _posted_project(request)
    form = ChannelForm(request.POST)

    def run():
        channel = channels.create_channel(actor=request.user, project=project, **form.cleaned_data)
        if channel.secret:
            _show_secret_once(request, channel)
        return channel

    return act(
        request,
        action="policy.channel.create",
        target=project,
        run=run,
        page=lambda: _list_page(request, project, channel_form=form),
        form=form,
        success=lambda channel: f"Added notification channel {channel.name} to {project}.",
        then=_channels_url(),
    )


@login_required
@require_POST
def channel_rotate_secret(request, pk):
    channel = _channel(request, pk)

    def run():
        channels.rotate_secret(actor=request.user, channel=channel)
        _show_secret_once(request, channel)

    return act(
        request,
        action="policy.channel.rotate-secret",
        target=channel,
        run=run,
        page=lambda: _list_page(request, channel.project),
        success=f"Gave notification channel {channel.name} a new signing secret.",
        then=_channels_url(),
        confirm=f"Give {channel.name} a new signing secret? Its receiver must then verify with the new one.",
    )


@login_required
@require_POST
def channel_delete(request, pk):
    channel = _channel(request, pk)
    project, name = channel.project, channel.name
    return act(
        request,
        action="policy.channel.delete",
        target=channel,
        run=lambda: channels.delete_channel(actor=request.user, channel=channel),
        page=lambda: _list_page(request, project),
        success=f"Deleted notification channel {name} from {project}.",
        then=_channels_url(),
        confirm=f"Delete notification channel {name}? Policies that use it send no more notifications.",
    )


@login_required
@require_POST
def delete(request, pk):
    policy = get_object_or_404(_policies(request.user), pk=pk)
    form = DeleteForm(request.POST)
    return act(
        request,
        action="policy.delete",
        target=policy,
        run=lambda: services.delete_policy(
            actor=request.user,
            policy=policy,
            snapshots=form.cleaned_data["snapshots"],
            confirm=form.cleaned_data["confirm"],
        ),
        page=lambda: _detail_page(request, policy, delete_form=form),
        form=form,
        success=lambda result: (
            f"Deleted policy {policy.name}: {services.SNAPSHOT_CHOICES[form.cleaned_data['snapshots']]}."
        ),
        then=reverse("policies:list"),
        confirm=f"Delete snapshot policy {policy.name}?",
    )
