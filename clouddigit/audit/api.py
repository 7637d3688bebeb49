"""REST API for the audit log: read-only by construction (no create, update or delete routes)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action

from clouddigit.audit.export import csv_response
from clouddigit.audit.filters import AuditFilter
from clouddigit.audit.models import AuditEntry


class AuditEntrySerializer(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    project = serializers.StringRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "at",
            "actor_name",
            "action",
            "outcome",
            "target_type",
            "target_id",
            "target_name",
            "account",
            "project",
            "source_ip",
            "message",
            "detail",
        ]


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = AuditEntrySerializer
    filterset_class = AuditFilter

    def get_queryset(self):
        return AuditEntry.objects.visible_to(self.request.user).select_related("account", "project__account")

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    @action(detail=False, methods=["get"], url_path="export")
    def export(self, request):
        """The filtered log as a CSV download."""
        return csv_response(self.filter_queryset(self.get_queryset()))
