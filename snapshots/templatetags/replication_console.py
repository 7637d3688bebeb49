"""The `snap.replicate.*` metrics of one project as a table: on Snapshots → Replication and on the policy
page."""

from __future__ import annotations

from django import template

from clouddigit.compute.models import Project
from snapshots import replication_metrics as metrics

register = template.Library()


@register.inclusion_tag("snapshots/panels/replication_metrics.html")
def replication_metrics(project, pairs=None):
    """`pairs`: already computed (the Replication page); else the project's, all regions."""
    if pairs is None:
        pairs = metrics.pair_metrics(Project.objects.filter(pk=project.pk))
    return {
        "pairs": pairs,
        "healthy_below": metrics.HEALTHY_BELOW_SECONDS,
        "alert_above": metrics.ALERT_ABOVE_SECONDS,
    }
