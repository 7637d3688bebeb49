"""The image catalogue's filters: the console list (whose header switchers choose project and region) and
the API list (which names them)."""

from __future__ import annotations

import django_filters
from django.db.models import Q

from clouddigit.compute.api import ProjectReferenceFilter
from clouddigit.compute.filters import TagFilter
from images.inspection import FORMATS
from images.models import Image


class ImageFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains", label="Name contains")
    state = django_filters.ChoiceFilter(choices=Image.State.choices, empty_label="any")
    # Not `format`: that is DRF's renderer switch by default (off here), and it made this filter a 404.
    disk_format = django_filters.ChoiceFilter(
        choices=[(name, name) for name in FORMATS],
        method="filter_disk_format",
        empty_label="any",
        label="Format",
        help_text="What inspection found, else what the uploader declared",
    )
    tag = TagFilter(label="Tag (key=value)")

    class Meta:
        model = Image
        fields = ["name", "state", "disk_format", "tag"]

    def filter_disk_format(self, queryset, name, value):
        return queryset.filter(Q(detected_format=value) | Q(detected_format="", declared_format=value))


class ImageAPIFilter(ImageFilter):
    renamed = {"format": "disk_format"}  # see clouddigit.api.base.FilterBackend

    project = ProjectReferenceFilter(help_text="account/project or a project id")
    region = django_filters.CharFilter(field_name="region__slug")
    slot = django_filters.ChoiceFilter(choices=Image.Slot.choices)

    class Meta(ImageFilter.Meta):
        fields = [*ImageFilter.Meta.fields, "project", "region", "slot"]
