"""Image forms shown on other apps' pages: "Promote to image" on a snapshot's page."""

from __future__ import annotations

from django import template

from clouddigit.access import can
from clouddigit.compute.permissions import Perm
from images.forms import PromoteForm

register = template.Library()


@register.inclusion_tag("images/partials/promote_form.html", takes_context=True)
def promote_form(context, snapshot):
    """The promote form: the one posted back with its error when there is one (images.views.promote
    renders the snapshot's page with it), else a fresh one with the boot disk chosen."""
    disks = list(context.get("disks") or snapshot.disks.all())
    form = context.get("promote_form") or PromoteForm(
        disks=disks, initial={"name": f"{snapshot.name[:57]}-image"}
    )
    request = context["request"]
    return {
        "snapshot": snapshot,
        "form": form,
        "disk_count": len(disks),
        "can_promote": can(request.user, Perm.PUBLISH_IMAGES, snapshot.project),
        "csrf_token": context.get("csrf_token"),
    }
