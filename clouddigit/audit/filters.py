from __future__ import annotations

import django_filters

from clouddigit.audit.models import AuditEntry


class AuditFilter(django_filters.FilterSet):
    """One FilterSet for the console's audit page, its CSV export and the API."""

    action = django_filters.CharFilter(lookup_expr="startswith", label="Action starts with")
    actor = django_filters.CharFilter(field_name="actor_name", label="Actor")
    outcome = django_filters.ChoiceFilter(choices=AuditEntry.Outcome.choices, empty_label="any")
    target = django_filters.CharFilter(
        field_name="target_name", lookup_expr="icontains", label="Target contains"
    )
    since = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte", label="Since (ISO time)")
    until = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="lt", label="Until (ISO time)")

    class Meta:
        model = AuditEntry
        fields = ["action", "actor", "outcome", "target", "since", "until"]
