"""Snapshots → Replication: the `snap.replicate.*` metrics of the project and region chosen in the header,
the copies in flight, the inter-region links and the project's inter-region transfer. The page polls its
own fragment every 10 s."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required

from clouddigit.compute.models import Project
from clouddigit.compute.permissions import Perm
from clouddigit.htmx import render_page_or_fragment
from snapshots import replication, replication_health, replication_metrics


def replication_context(user, scope) -> dict:
    """What the page shows; nothing for a user who may not see the scope's snapshots."""
    project = scope.project if scope else None
    projects = (
        Project.objects.visible_to(user, Perm.VIEW_SNAPSHOTS).filter(pk=project.pk)
        if project
        else Project.objects.none()
    )
    if project is None or not projects.exists():
        return {"pairs": [], "in_flight": [], "links": [], "usage": []}
    region = scope.region
    pairs = replication_metrics.pair_metrics(projects, region)
    return {
        "pairs": pairs,
        "in_flight": [
            (copy, replication.progress(copy)) for copy in replication_metrics.in_flight(projects, region)
        ],
        "links": replication_health.links([(p.source_region, p.target_region) for p in pairs], projects),
        "usage": replication_metrics.usage(project),
        "price_per_gib": replication_metrics.price_per_gib(),
        "healthy_below": replication_metrics.HEALTHY_BELOW_SECONDS,
        "alert_above": replication_metrics.ALERT_ABOVE_SECONDS,
    }


@login_required
def replication_page(request):
    context = replication_context(request.user, request.scope)
    return render_page_or_fragment(request, "snapshots/replication.html", "live", context)
