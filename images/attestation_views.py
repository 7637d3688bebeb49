"""Console pages for CIS attestation: signing keys (IAM › Signing keys), pasting a signature on an
image's page, and a project's image policy with what it would deny. Every action calls
images.attestation, as the API and the CLI do."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from clouddigit.access import can, project_by_reference
from clouddigit.audit.models import AuditEntry
from clouddigit.compute.models import Account, Project
from clouddigit.compute.permissions import Perm
from clouddigit.console import act
from clouddigit.errors import InvalidRequest
from images import attestation
from images.attestation_forms import AttestForm, PolicyForm, RegisterKeyForm
from images.models import ImagePolicy, SigningKey
from images.views import detail_context, visible_images

RECENT_WOULD_DENY = 20

# --- Signing keys ------------------------------------------------------------------------------------


def _key_accounts(user) -> list[str]:
    """Slugs of the accounts where `user` may register a key: attest_images on the account or one of
    its projects."""
    accounts = Account.objects.visible_to(user, Perm.ATTEST_IMAGES)
    return list(accounts.order_by("slug").values_list("slug", flat=True))


def _keys_page(request, form: RegisterKeyForm | None = None, status: int = 200):
    accounts = _key_accounts(request.user)
    keys = list(attestation.keys_visible_to(request.user).order_by("account__slug", "name"))
    admin_accounts = set(
        Account.objects.holding(request.user, Perm.MANAGE_ROLES).values_list("pk", flat=True)
    )
    context = {
        "keys": [(key, key.owner_id == request.user.pk or key.account_id in admin_accounts) for key in keys],
        "form": form or (RegisterKeyForm(accounts=accounts) if accounts else None),
    }
    return render(request, "images/signing_keys.html", context, status=status)


@login_required
def signing_keys(request):
    return _keys_page(request)


@login_required
@require_POST
def register_signing_key(request):
    form = RegisterKeyForm(request.POST, accounts=_key_accounts(request.user))
    return act(
        request,
        action="image.signing-key.register",
        target=None,
        run=lambda: attestation.register_key(
            actor=request.user,
            account=Account.objects.get(slug=form.cleaned_data["account"]),
            name=form.cleaned_data["name"],
            public_key=form.cleaned_data["public_key"],
        ),
        page=lambda: _keys_page(request, form),
        form=form,
        success=lambda key: f"Registered signing key {key.name} ({key.fingerprint[:16]}) in {key.account}.",
        then=reverse("iam:signing-keys"),
    )


@login_required
@require_POST
def revoke_signing_key(request, pk):
    key = get_object_or_404(attestation.keys_visible_to(request.user), pk=pk)
    return act(
        request,
        action="image.signing-key.revoke",
        target=key,
        run=lambda: attestation.revoke_key(actor=request.user, key=key),
        page=lambda: _keys_page(request),
        success=f"Revoked signing key {key.name}: attestations made with it no longer count.",
        then=reverse("iam:signing-keys"),
        confirm=f"Revoke {key.name}? Every attestation made with it stops counting.",
    )


# --- Attesting on an image's page --------------------------------------------------------------------


def own_keys(user, image):
    """The keys `user` may sign `image` with: their own, in the image's account, not revoked."""
    if not image.project_id:
        return SigningKey.objects.none()
    return SigningKey.objects.filter(owner=user, account=image.project.account_id, revoked_at__isnull=True)


@login_required
@require_POST
def attest(request, pk):
    image = get_object_or_404(visible_images(request.user), pk=pk)
    form = AttestForm(request.POST, keys=own_keys(request.user, image))
    return act(
        request,
        action="image.attest",
        target=image,
        run=lambda: attestation.attest_image(
            actor=request.user,
            image=image,
            key=form.cleaned_data["key"],
            signature=form.cleaned_data["signature"],
        ),
        page=lambda: render(
            request, "images/detail.html", {**detail_context(request, image), "attest_form": form}
        ),
        form=form,
        success=lambda result: f"{image.name} is attested as CIS level {image.cis_level}.",
        then=reverse("images:detail", args=[image.pk]) + "#attestation",
    )


# --- The project's image policy ----------------------------------------------------------------------


def _policy_project(request, reference: str | None) -> Project | None:
    """The project named (its id), else the header's project; among those whose images the user sees."""
    if reference:
        try:
            return project_by_reference(request.user, reference, Perm.VIEW_IMAGES)
        except InvalidRequest:
            raise Http404("No such project, or you may not see it.") from None
    scoped = request.scope.project if request.scope else None
    projects = Project.objects.visible_to(request.user, Perm.VIEW_IMAGES).select_related("account")
    return projects.filter(pk=scoped.pk).first() if scoped else None


def _policy_page(request, project: Project | None, form: PolicyForm | None = None, status: int = 200):
    context: dict = {"project": project}
    if project is not None:
        policy = ImagePolicy.objects.filter(project=project).first()
        mode = policy.require_attestation if policy else ImagePolicy.Attestation.OFF
        can_set = can(request.user, Perm.MANAGE_IMAGE_QUOTAS, project)
        context.update(
            policy=policy,
            mode=ImagePolicy.Attestation(mode),
            can_set=can_set,
            form=form
            or (PolicyForm(initial={"project": project.pk, "attestation": mode}) if can_set else None),
            denied=attestation.would_deny(project),
        )
        if can(request.user, Perm.VIEW_AUDIT, project):
            context["recorded"] = AuditEntry.objects.filter(
                project=project, action="image.attestation.would-deny"
            ).order_by("-at")[:RECENT_WOULD_DENY]
    return render(request, "images/policy.html", context, status=status)


@login_required
def image_policy(request):
    return _policy_page(request, _policy_project(request, request.GET.get("project")))


@login_required
@require_POST
def set_image_policy(request):
    if not request.POST.get("project"):
        raise Http404("The form names no project.")
    project = _policy_project(request, request.POST["project"])
    assert project is not None  # it was named
    form = PolicyForm(request.POST)
    return act(
        request,
        action="image.policy.set",
        target=project,
        run=lambda: attestation.set_policy(
            actor=request.user, project=project, mode=form.cleaned_data["attestation"]
        ),
        page=lambda: _policy_page(request, project, form),
        form=form,
        success=lambda result: (
            f"Image policy of {project}: {ImagePolicy.Attestation(form.cleaned_data['attestation']).label}."
        ),
        then=f"{reverse('images:policy')}?project={project.pk}",
    )
