"""The images app's panel on another app's page: "Promote to image" on a snapshot's page. The snapshots
app knows nothing of images: its template names this tag, and a refused form comes back through
`clouddigit.console.page_at` (images.views.promote)."""

from __future__ import annotations

from django import template

from clouddigit.access import can
from clouddigit.compute.permissions import Perm
from clouddigit.console import posted_form
from images.forms import PromoteForm

register = template.Library()


@register.inclusion_tag("images/partials/promote.html", takes_context=True)
def promote_panel(context, snapshot):
    """The promote form: the one posted back with its error when there is one (images.views.promote
    shows the snapshot's page with it, by `page_at`), else a fresh one with the boot disk chosen."""
    disks = list(context.get("disks") or snapshot.disks.all())
    form = posted_form(context, "promote_form") or PromoteForm(
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
