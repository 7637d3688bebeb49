"""The CIS attestation card on an image's page: status, history and the form to paste a signature."""

from __future__ import annotations

from django import template
from django.db.models import Prefetch, prefetch_related_objects

from clouddigit.access import can
from clouddigit.compute.permissions import Perm
from clouddigit.signing import message
from images import attestation
from images.attestation_forms import AttestForm
from images.attestation_views import own_keys
from images.models import Attestation, Image, ImagePolicy

register = template.Library()


@register.inclusion_tag("images/partials/attestation.html", takes_context=True)
def attestation_panel(context, image: Image):
    """The form posted back with its error when there is one (attestation_views.attest renders the image's
    page with it), else a fresh one listing the user's own keys."""
    request = context["request"]
    # One query for the attestations and their keys, used by both the status and the history.
    prefetch_related_objects(
        [image], Prefetch("attestations", queryset=Attestation.objects.select_related("key"))
    )
    current, reason = attestation.attestation_status(image)
    panel = {
        "image": image,
        "current": current,
        "reason": reason,
        "history": image.attestations.all(),
        "csrf_token": context.get("csrf_token"),
    }
    if image.project_id:
        policy = ImagePolicy.objects.filter(project=image.project_id).first()
        panel["project_mode"] = policy.get_require_attestation_display() if policy else "Not required"
    may_attest = (
        image.project_id is not None
        and image.state == Image.State.AVAILABLE
        and can(request.user, Perm.ATTEST_IMAGES, image.project)
    )
    if may_attest:
        keys = own_keys(request.user, image)
        panel.update(
            may_attest=True,
            has_keys=keys.exists(),
            form=context.get("attest_form") or AttestForm(keys=keys),
        )
        try:
            signed = message(image.sha256, image.cis_level, request.user.get_username())
        except ValueError:
            signed = b""  # a cis-level with a line break: attest_image refuses it and says why
        if image.cis_level and signed:
            panel.update(message=signed.decode(), username=request.user.get_username())
    return panel
