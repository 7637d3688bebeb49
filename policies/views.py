"""Console pages for snapshot policies: list the project's policies, apply one from pasted or uploaded
YAML, read and download its canonical YAML, edit it. Applying calls the same service as the API and CLI."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from clouddigit.access import can
from clouddigit.audit.log import Target, record
from clouddigit.audit.models import AuditEntry
from clouddigit.compute.models import Project
from clouddigit.errors import ServiceError
from policies import services
from policies.api import YAML_CONTENT_TYPE
from policies.coverage import coverage
from policies.forms import ApplyForm, EditForm
from policies.models import Policy

ACTION = "policy.apply"


def _policies(user):
    return Policy.objects.visible_to(user).select_related("project__account")


def _form_errors(form) -> str:
    return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())


def _refuse_invalid_form(request, form, target) -> None:
    """A form that never reached the service is refused here, so the audit log still shows it."""
    record(
        actor=request.user,
        action=ACTION,
        outcome=AuditEntry.Outcome.REFUSED,
        target=Target.of(target),
        message=_form_errors(form),
    )


def _show_error(form, field: str, error: ServiceError) -> None:
    """A mistake in the policy shows at the field the user gave it in; a refusal above the form."""
    form.add_error(field if error.field else None, error.message)


def _applied(request, policy: Policy, replaced: Policy | None = None):
    note = ""
    if replaced is not None and replaced.pk != policy.pk:
        note = f" (the YAML names {policy.name}; {replaced.name} is unchanged)"
    messages.success(request, f"Applied snapshot policy {policy.name} to {policy.project}{note}.")
    return redirect("policies:detail", pk=policy.pk)


def _list_page(request, project: Project | None, form: ApplyForm | None = None, status: int = 200):
    policies = _policies(request.user).filter(project=project) if project else Policy.objects.none()
    can_manage = project is not None and can(request.user, "manage_policies", project)
    context = {
        "project": project,
        "rows": [(policy, policy.parsed) for policy in policies.order_by("name")],
        "can_manage": can_manage,
        "form": form or (ApplyForm() if can_manage else None),
    }
    return render(request, "policies/list.html", context, status=status)


@login_required
def policy_list(request):
    return _list_page(request, request.scope.project if request.scope else None)


@login_required
@require_POST
def apply(request):
    # The project the form was shown for (it says so), not whatever the switcher says now in another tab.
    reference = request.POST.get("project")
    if reference:
        project = Project.objects.visible_to(request.user).by_reference(reference).first()
        if project is None:
            raise Http404("No such project, or you may not see it.")
    else:
        project = request.scope.project if request.scope else None
        if project is None:
            raise Http404("You have no project to apply a policy to.")
    form = ApplyForm(request.POST, request.FILES)
    if not form.is_valid():
        _refuse_invalid_form(request, form, project)
        return _list_page(request, project, form, status=400)
    try:
        policy = services.apply_policy(actor=request.user, project=project, text=form.cleaned_data["text"])
    except ServiceError as error:
        _show_error(form, form.source_field, error)
        return _list_page(request, project, form, status=error.status)
    return _applied(request, policy)


def _detail_page(request, policy: Policy, form: EditForm | None = None, status: int = 200):
    can_manage = can(request.user, "manage_policies", policy.project)
    context = {
        "policy": policy,
        "spec": policy.parsed,
        "yaml": services.export_policy(policy),
        "can_manage": can_manage,
        "form": form or (EditForm(initial={"yaml": policy.source}) if can_manage else None),
        "coverage": coverage(policy, timezone.now()),
        "runs": policy.runs.select_related("vm", "snapshot")[:50],
    }
    return render(request, "policies/detail.html", context, status=status)


@login_required
def policy_detail(request, pk):
    return _detail_page(request, get_object_or_404(_policies(request.user), pk=pk))


@login_required
@require_POST
def edit(request, pk):
    policy = get_object_or_404(_policies(request.user), pk=pk)
    form = EditForm(request.POST)
    if not form.is_valid():
        _refuse_invalid_form(request, form, policy)
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
