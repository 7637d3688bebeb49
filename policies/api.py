"""REST API for snapshot policies: list and read them, apply one from YAML, export its canonical YAML;
and their restore drills: list and read them, retry or delete a failed one. Every write is one call into
policies.services or policies.drills, which check the permission and audit the outcome."""

from __future__ import annotations

from dataclasses import asdict

import django_filters
import yaml
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, renderers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from clouddigit.access import project_by_reference
from clouddigit.compute.api import ProjectReferenceFilter
from policies import drills, services, simulator
from policies.models import Drill, Policy
from policies.spec import PolicySpec

YAML_CONTENT_TYPE = "text/yaml; charset=utf-8"


def schedule_of(spec: PolicySpec) -> dict[str, str]:
    """`{"daily": "02:00 BDT", "weekly": "Sun 03:00 BDT"}`: the slots as the policy writes them."""
    return {key: str(slot) for key, slot in (("daily", spec.daily), ("weekly", spec.weekly)) if slot}


def retention_of(spec: PolicySpec) -> dict[str, int]:
    return {"daily": spec.keep_daily, "weekly": spec.keep_weekly}


def scope_of(spec: PolicySpec) -> dict[str, list[str]]:
    return {"vm_tags": [f"{key}={value}" for key, value in spec.vm_tags]}


class PolicySerializer(serializers.ModelSerializer):
    project = serializers.StringRelatedField(read_only=True)
    schedule = serializers.SerializerMethodField(help_text='e.g. {"daily": "02:00 BDT"}')
    retention = serializers.SerializerMethodField(help_text='e.g. {"daily": 7, "weekly": 4}')
    scope = serializers.SerializerMethodField(help_text='e.g. {"vm_tags": ["env=prod"]}')
    application_consistent = serializers.BooleanField(source="spec.application_consistent")
    notify_channel = serializers.CharField(source="spec.notify_channel")
    when_stopped = serializers.CharField(source="spec.when_stopped")

    class Meta:
        model = Policy
        fields = [
            "id",
            "project",
            "name",
            "schedule",
            "retention",
            "scope",
            "application_consistent",
            "notify_channel",
            "when_stopped",
            "applied_by",
            "created_at",
            "updated_at",
        ]

    def get_schedule(self, policy) -> dict[str, str]:
        return schedule_of(policy.parsed)

    def get_retention(self, policy) -> dict[str, int]:
        return retention_of(policy.parsed)

    def get_scope(self, policy) -> dict[str, list[str]]:
        return scope_of(policy.parsed)


class PolicyDocumentSerializer(serializers.Serializer):
    """The document `export` answers as YAML (and `apply` takes): for the schema only."""

    name = serializers.CharField()
    schedule = serializers.DictField(child=serializers.CharField(), help_text='e.g. {"daily": "02:00 BDT"}')
    retention = serializers.DictField(child=serializers.IntegerField(), help_text='e.g. {"daily": 7}')
    scope = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), help_text='e.g. {"vm_tags": ["env=prod"]}'
    )
    application_consistent = serializers.BooleanField()
    notify_channel = serializers.CharField(allow_blank=True)
    when_stopped = serializers.CharField()


class ApplySerializer(serializers.Serializer):
    project = serializers.CharField(help_text="account/project or a project id")
    # Neither trimmed nor required to be non-blank: the service parses the text exactly as sent, so
    # its errors name the lines the caller wrote (an empty policy is its error to give).
    yaml = serializers.CharField(allow_blank=True, trim_whitespace=False, help_text="The policy's YAML")


class SimulateSerializer(ApplySerializer):
    start = serializers.DateTimeField(
        required=False, help_text="When the simulated clock starts (default: now)"
    )
    days = serializers.IntegerField(default=0, min_value=0, max_value=366, help_text="How many days to run")


class PolicyFilter(django_filters.FilterSet):
    project = ProjectReferenceFilter(help_text="account/project or a project id")
    name = django_filters.CharFilter(lookup_expr="icontains", help_text="name contains")

    class Meta:
        model = Policy
        fields = ["project", "name"]


class YAMLRenderer(renderers.BaseRenderer):
    """Lets `Accept: text/yaml` reach the export; an error rendered here is its JSON fields as YAML."""

    media_type = "text/yaml"
    format = "yaml"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)


class PolicyViewSet(viewsets.ReadOnlyModelViewSet):
    """Snapshot policies: when to snapshot which VMs, and how many snapshots to keep."""

    serializer_class = PolicySerializer
    filterset_class = PolicyFilter

    def get_queryset(self):
        return (
            Policy.objects.visible_to(self.request.user)
            .select_related("project__account")
            .order_by("project__account__slug", "project__slug", "name")
        )

    @extend_schema(
        request=ApplySerializer,
        responses={201: PolicySerializer, 200: OpenApiResponse(PolicySerializer, "replaced")},
    )
    @action(detail=False, methods=["post"])
    def apply(self, request):
        """Create the policy named in the YAML (201), or replace the project's policy of that name
        (200). An invalid policy is a 400 `InvalidPolicy` naming the line and field; nothing is saved."""
        data = ApplySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = project_by_reference(request.user, data.validated_data["project"])
        existing = set(project.snapshot_policies.values_list("pk", flat=True))
        policy = services.apply_policy(actor=request.user, project=project, text=data.validated_data["yaml"])
        code = status.HTTP_200_OK if policy.pk in existing else status.HTTP_201_CREATED
        return Response(PolicySerializer(policy).data, status=code)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "snapshots",
                str,
                required=True,
                enum=list(services.SNAPSHOT_CHOICES),
                description="what becomes of the policy's snapshots",
            ),
            OpenApiParameter(
                "confirm", str, description="the policy's name, to confirm deleting its snapshots"
            ),
        ],
        responses={204: None},
    )
    def destroy(self, request, pk=None):
        """Delete a policy, saying what becomes of its snapshots: `?snapshots=keep|retain|delete`."""
        services.delete_policy(
            actor=request.user,
            policy=self.get_object(),
            snapshots=request.query_params.get("snapshots", ""),
            confirm=request.query_params.get("confirm", ""),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=SimulateSerializer, responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"])
    def simulate(self, request):
        """The prune simulator: which existing snapshots the policy's retention would keep and delete (and
        the billed bytes freed), and every snapshot it would create over `days` from `start`, with whether
        each is still kept at the end. Runs the scheduler's own code on a simulated clock; saves nothing."""
        data = SimulateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = project_by_reference(request.user, data.validated_data["project"])
        outcome = simulator.simulate(
            actor=request.user,
            project=project,
            text=data.validated_data["yaml"],
            start=data.validated_data.get("start"),
            days=data.validated_data["days"],
        )
        return Response(asdict(outcome))

    @extend_schema(responses={(200, "text/yaml"): PolicyDocumentSerializer})
    @action(
        detail=True,
        methods=["get"],
        renderer_classes=[renderers.JSONRenderer, YAMLRenderer],
    )
    def export(self, request, pk=None):
        """The policy's canonical YAML (`text/yaml`): what `apply` accepts back."""
        # A plain response whatever the negotiated renderer: the body is the YAML itself, not JSON.
        return HttpResponse(services.export_policy(self.get_object()), content_type=YAML_CONTENT_TYPE)


class DrillSerializer(serializers.ModelSerializer):
    policy = serializers.CharField(source="policy.name", read_only=True, allow_null=True)
    project = serializers.StringRelatedField(read_only=True)
    vm = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="None once the VM is gone"
    )
    snapshot = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    checks = serializers.JSONField(read_only=True, help_text="[{check, ok, detail}]")
    seconds = serializers.FloatField(read_only=True, allow_null=True, help_text="Time to restore")

    class Meta:
        model = Drill
        fields = [
            "id",
            "policy",
            "project",
            "vm",
            "vm_name",
            "snapshot",
            "snapshot_name",
            "state",
            "checks",
            "seconds",
            "error",
            "requested_by",
            "started_at",
            "finished_at",
        ]


class DrillFilter(django_filters.FilterSet):
    project = ProjectReferenceFilter(help_text="account/project or a project id")
    policy = django_filters.CharFilter(field_name="policy__name", help_text="drills of the policy so named")

    class Meta:
        model = Drill
        fields = ["project", "policy", "state"]


class DrillViewSet(mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """Restore drills: a VM's latest snapshot restored to a sandbox VM and checked, newest first."""

    serializer_class = DrillSerializer
    filterset_class = DrillFilter

    def get_queryset(self):
        return (
            Drill.objects.visible_to(self.request.user)
            .select_related("project__account", "policy")
            .order_by("-started_at", "id")
        )

    @extend_schema(request=None, responses={202: DrillSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Run a failed or interrupted drill again (a failed one from a fresh restore of its snapshot)."""
        drill = drills.retry_drill(actor=request.user, drill=self.get_object())
        current = self.get_queryset().filter(pk=drill.pk).first()  # the drill may have finished already
        return Response(DrillSerializer(current or drill).data, status=status.HTTP_202_ACCEPTED)

    def destroy(self, request, *args, **kwargs):
        """Delete a failed drill from the history."""
        drills.delete_drill(actor=request.user, drill=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
