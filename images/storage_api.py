"""REST API for the project storage quota: how much of it a project uses, and raising it for a ticket."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from clouddigit.access import project_by_reference
from clouddigit.api.base import valid_data
from clouddigit.errors import InvalidRequest
from images import storage


class StorageUsageSerializer(serializers.Serializer):
    project = serializers.CharField(help_text="account/project")
    used_bytes = serializers.IntegerField(help_text="snapshot_bytes + image_bytes")
    snapshot_bytes = serializers.IntegerField(help_text="Billed bytes of the project's snapshots")
    image_bytes = serializers.IntegerField(
        help_text="Stored bytes of its custom images, plus what images in flight may store"
    )
    limit_bytes = serializers.IntegerField(help_text="The project's storage quota")
    ticket = serializers.CharField(help_text="The ticket the quota was last raised for; empty: the default")

    def to_representation(self, usage: storage.StorageUsage) -> dict:
        return {
            "project": str(usage.project),
            "used_bytes": usage.used_bytes,
            "snapshot_bytes": usage.snapshot_bytes,
            "image_bytes": usage.image_bytes,
            "limit_bytes": usage.limit_bytes,
            "ticket": usage.ticket,
        }


class RaiseStorageQuotaSerializer(serializers.Serializer):
    project = serializers.CharField(help_text="account/project or a project id")
    limit_gib = serializers.IntegerField()
    ticket = serializers.CharField(allow_blank=True)


class StorageQuotaViewSet(viewsets.GenericViewSet):
    """A project's storage quota: snapshots (billed bytes) and custom images (stored bytes) together."""

    serializer_class = StorageUsageSerializer

    @extend_schema(request=RaiseStorageQuotaSerializer, responses={201: StorageUsageSerializer})
    def create(self, request):
        """Set the project's storage quota for a support ticket (needs the rights to raise both snapshot
        and image limits); answers the project's usage against the new quota."""
        data = valid_data(RaiseStorageQuotaSerializer, request)
        project = project_by_reference(request.user, data["project"])
        storage.raise_storage_quota(
            actor=request.user, project=project, limit_gib=data["limit_gib"], ticket=data["ticket"]
        )
        return Response(StorageUsageSerializer(storage.usage(project)).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter("project", str, description="account/project or a project id")],
        responses={200: StorageUsageSerializer},
    )
    @action(detail=False, methods=["get"])
    def usage(self, request):
        """How much of its storage quota the project uses."""
        reference = request.query_params.get("project", "")
        if not reference:
            raise InvalidRequest("Name the project with ?project=account/project.", field="project")
        project = project_by_reference(request.user, reference)
        return Response(StorageUsageSerializer(storage.usage(project)).data)
