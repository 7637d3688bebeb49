"""The snapshots app's panels on the compute pages: a VM's or volume's snapshots with the form to take
one, and a volume's snapshot limit. The compute app knows nothing of snapshots: its templates name
these tags, and a refused form comes back through `clouddigit.console.page_at` (snapshots.views)."""

from __future__ import annotations

from django import template
from django.urls import reverse

from clouddigit.access import can
from clouddigit.compute.models import VM, Volume
from clouddigit.compute.permissions import Perm
from clouddigit.console import posted_form
from snapshots.forms import CreateForm
from snapshots.models import Snapshot
from snapshots.services import snapshot_limit

register = template.Library()


@register.inclusion_tag("snapshots/panels/snapshots.html", takes_context=True)
def snapshots_panel(context, target: VM | Volume):
    """The newest snapshots of a VM or volume, and the form to take one."""
    user = context["request"].user
    of: dict[str, VM | Volume]
    if isinstance(target, VM):
        of, create = {"vm": target}, "snapshots:create-for-vm"
    else:
        of, create = {"disks__volume": target}, "snapshots:create-for-volume"
    return {
        "snapshots": Snapshot.objects.visible_to(user).filter(**of).distinct()[:10],
        "can_snapshot": can(user, Perm.CREATE_SNAPSHOTS, target.project),
        "snapshot_form": posted_form(context, "snapshot_form") or CreateForm(),
        "create_url": reverse(create, args=[target.pk]),
        "csrf_token": context.get("csrf_token"),
    }


@register.inclusion_tag("snapshots/panels/limit.html", takes_context=True)
def snapshot_limit_panel(context, volume: Volume):
    """How many snapshots the volume keeps, and (for a quota manager) the form to raise it."""
    return {
        "volume": volume,
        "snapshot_limit": snapshot_limit(volume),
        "can_raise_limit": can(context["request"].user, Perm.MANAGE_SNAPSHOT_QUOTAS, volume.project),
        "limit_form": posted_form(context, "limit_form"),
        "csrf_token": context.get("csrf_token"),
    }
