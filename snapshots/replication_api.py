"""REST API for replication monitoring: the `snap.replicate.*` metrics of a project per region pair, its
copies in flight and its inter-region transfer (the numbers of Snapshots → Replication)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from clouddigit.access import project_by_reference
from clouddigit.compute.models import Project, Region
from clouddigit.compute.permissions import Perm
from clouddigit.errors import InvalidRequest
from snapshots import replication, replication_metrics


class PairSerializer(serializers.Serializer):
    source_region = serializers.CharField()
    target_region = serializers.CharField()
    lag_seconds = serializers.IntegerField(help_text="snap.replicate.lag_sec: oldest pending copy's age")
    bytes_24h = serializers.IntegerField(help_text="snap.replicate.bytes_24h")
    failures_24h = serializers.IntegerField(help_text="snap.replicate.failures_24h")
    pending = serializers.IntegerField(help_text="Copies not landed (Creating or Error)")
    bytes_sent_total = serializers.IntegerField(help_text="Metered inter-region transfer, all time")
    status = serializers.ChoiceField(choices=["healthy", "warn", "alert"])
    alerts = serializers.ListField(child=serializers.CharField())


class InFlightSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    source_region = serializers.CharField()
    target_region = serializers.CharField()
    state = serializers.CharField()
    percent = serializers.IntegerField()
    bytes_done = serializers.IntegerField()
    bytes_total = serializers.IntegerField()
    bytes_sent = serializers.IntegerField()
    requested_at = serializers.DateTimeField()
    step = serializers.CharField()
    last_error = serializers.CharField()


class ChargeSerializer(serializers.Serializer):
    month = serializers.DateField()
    source_region = serializers.CharField()
    target_region = serializers.CharField()
    bytes_sent = serializers.IntegerField()
    price = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="USD")


class ReplicationSerializer(serializers.Serializer):
    project = serializers.CharField(help_text="account/project")
    pairs = PairSerializer(many=True)
    in_flight = InFlightSerializer(many=True, help_text="At most 50, oldest first")
    usage = ChargeSerializer(many=True, help_text="Charged as inter-region transfer, per month")
    price_per_gib = serializers.DecimalField(max_digits=10, decimal_places=4, help_text="USD per GiB")


def _in_flight(copy) -> dict:
    return {
        "id": copy.pk,
        "name": copy.name,
        "source_region": copy.source_region_id,
        "target_region": copy.region_id,
        "state": copy.state,
        "percent": replication.progress(copy)["percent"],
        "bytes_done": copy.bytes_done,
        "bytes_total": copy.bytes_total,
        "bytes_sent": copy.bytes_sent,
        "requested_at": copy.created_at,
        "step": copy.step,
        "last_error": copy.last_error,
    }


class ReplicationView(GenericAPIView):
    """Cross-region replication of a project's snapshots, per region pair: one report, not a list of
    items (so no page, and a schema that says so)."""

    serializer_class = ReplicationSerializer
    queryset = Project.objects.none()  # for the schema: the project is named in the query

    @extend_schema(
        parameters=[
            OpenApiParameter("project", str, description="account/project or a project id", required=True),
            OpenApiParameter("region", str, description="Only pairs with this region at either end"),
        ],
        responses={200: ReplicationSerializer},
    )
    def get(self, request):
        """The project's `snap.replicate.*` metrics (lag < 600 s healthy, > 1800 s or a failure: alert),
        its copies in flight and its inter-region transfer."""
        reference = request.query_params.get("project", "")
        if not reference:
            raise InvalidRequest("Name the project with ?project=account/project.", field="project")
        project = project_by_reference(request.user, reference, Perm.VIEW_SNAPSHOTS)
        region = None
        if slug := request.query_params.get("region", ""):
            region = Region.objects.filter(slug=slug).first()
            if region is None:
                raise InvalidRequest(f"There is no region {slug!r}.", field="region")
        projects = Project.objects.filter(pk=project.pk)
        pairs = replication_metrics.pair_metrics(projects, region)
        data = {
            "project": str(project),
            "pairs": [
                {
                    "source_region": p.source_region,
                    "target_region": p.target_region,
                    "lag_seconds": p.lag_seconds,
                    "bytes_24h": p.bytes_24h,
                    "failures_24h": p.failures_24h,
                    "pending": p.pending,
                    "bytes_sent_total": p.bytes_sent_total,
                    "status": p.status,
                    "alerts": p.alerts,
                }
                for p in pairs
            ],
            "in_flight": [_in_flight(c) for c in replication_metrics.in_flight(projects, region)],
            "usage": [
                {
                    "month": c.month,
                    "source_region": c.source_region,
                    "target_region": c.target_region,
                    "bytes_sent": c.bytes_sent,
                    "price": c.price,
                }
                for c in replication_metrics.usage(project)
            ],
            "price_per_gib": replication_metrics.price_per_gib(),
        }
        return Response(ReplicationSerializer(data).data)
