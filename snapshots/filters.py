"""The snapshot list's filters: one FilterSet for the API list and the console list."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import django_filters
from django import forms
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from clouddigit.compute.api import ProjectReferenceFilter
from clouddigit.compute.filters import TagFilter
from snapshots.models import Snapshot, SnapshotDisk

DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
NEWEST_FIRST = ("-created_at", "id")
MAX_LATEST = 10_000


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`24h`, `30m`, `7d`, `2w`, `90s` ago, or an ISO date/timestamp (without an offset: UTC).

    Raises ValueError with a message meant for the user."""
    text = text.strip()
    match = DURATION_RE.match(text)
    if match:
        amount, unit = match.groups()
        try:
            return (now or timezone.now()) - timedelta(**{UNITS[unit]: int(amount)})
        except OverflowError:
            raise ValueError(f"{text!r} reaches back further than any snapshot could.") from None
    try:
        moment = parse_datetime(text)  # also takes a bare date: midnight
    except ValueError:  # well-formed but impossible, e.g. 2026-11-26T25:00
        moment = None
    if moment is None:
        raise ValueError(
            f"{text!r} is neither a duration (e.g. 30m, 24h, 7d) nor an ISO timestamp "
            "(e.g. 2026-11-26T02:00:00Z)."
        )
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)


class SinceField(forms.CharField):
    def clean(self, value):
        value = super().clean(value)
        if not value:
            return None
        try:
            return parse_since(value)
        except ValueError as error:
            # The reason quotes the user's text, so it goes in as a parameter: django-filter %-formats
            # every message it reports, and a `%` in the text would otherwise be a 500.
            raise forms.ValidationError("%(reason)s", params={"reason": str(error)}) from None


@extend_schema_field(OpenApiTypes.STR)
class SinceFilter(django_filters.Filter):
    """`?since=24h`: created in the last 24 hours (or since an ISO timestamp)."""

    field_class = SinceField

    def filter(self, qs, value):
        return qs.filter(created_at__gte=value) if value else qs


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_LATEST})
class LatestFilter(django_filters.Filter):
    """`?latest=1`: only the newest N of what the other filters leave. SnapshotFilter.filter_queryset
    applies it last, whatever the order of the query string or of the declarations."""

    field_class = forms.IntegerField

    def filter(self, qs, value):
        return qs


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


class SnapshotFilter(django_filters.FilterSet):
    renamed = {"status": "state"}  # see clouddigit.api.base.FilterBackend

    name = django_filters.CharFilter(lookup_expr="icontains", label="Name contains")
    volume = django_filters.CharFilter(method="filter_volume", label="Volume (id or name)")
    vm = django_filters.CharFilter(method="filter_vm", label="VM snapshots of (VM id or name)")
    tag = TagFilter(label="Tag (key=value)")
    state = django_filters.ChoiceFilter(choices=Snapshot.State.choices, empty_label="any")
    policy = django_filters.CharFilter(field_name="policy_name", label="Policy")
    origin = django_filters.ChoiceFilter(choices=Snapshot.Origin.choices, empty_label="any")
    kind = django_filters.ChoiceFilter(choices=Snapshot.Kind.choices, empty_label="any")
    project = ProjectReferenceFilter(help_text="account/project or a project id")
    region = django_filters.CharFilter(field_name="region", label="Region")
    since = SinceFilter(label="Since (24h, 7d or an ISO timestamp)")
    latest = LatestFilter(min_value=1, max_value=MAX_LATEST, label="Only the newest N")

    class Meta:
        model = Snapshot
        fields = [
            "name",
            "volume",
            "vm",
            "tag",
            "state",
            "policy",
            "origin",
            "kind",
            "project",
            "region",
            "since",
            "latest",
        ]

    def filter_volume(self, queryset, name, value):
        disks = Q(volume_name=value) | Q(volume__name=value)
        if volume_id := _as_uuid(value):
            disks |= Q(volume_id=volume_id)
        # A subquery, not a join: a VM snapshot with several matching disks is still listed once.
        return queryset.filter(pk__in=SnapshotDisk.objects.filter(disks).values("snapshot"))

    def filter_vm(self, queryset, name, value):
        """The VM's own snapshots (all its volumes), which `vm restore` takes: the spec's drill recipe
        `snapshot list --vm db-01 --latest 1 -o id` must never answer a volume snapshot of one of its
        disks. Those are found with `volume`."""
        vms = Q(vm_name=value) | Q(vm__name=value)
        if vm_id := _as_uuid(value):
            vms |= Q(vm_id=vm_id)
        return queryset.filter(vms, kind=Snapshot.Kind.VM)

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset).order_by(*NEWEST_FIRST)
        latest = self.form.cleaned_data.get("latest")
        if latest:
            # A subquery rather than a slice, so the result can still be filtered (e.g. by pk in a detail).
            queryset = queryset.filter(pk__in=queryset.values("pk")[: int(latest)])
        return queryset
