"""The image catalogue's filters (the console list; the header's switchers choose project and region)."""

from __future__ import annotations

import django_filters
from django.db.models import Q

from clouddigit.compute.filters import TagFilter
from images.inspection import FORMATS
from images.models import Image


class ImageFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains", label="Name contains")
    state = django_filters.ChoiceFilter(choices=Image.State.choices, empty_label="any")
    format = django_filters.ChoiceFilter(
        choices=[(name, name) for name in FORMATS], method="filter_format", empty_label="any", label="Format"
    )
    tag = TagFilter(label="Tag (key=value)")

    class Meta:
        model = Image
        fields = ["name", "state", "format", "tag"]

    def filter_format(self, queryset, name, value):
        return queryset.filter(Q(detected_format=value) | Q(detected_format="", declared_format=value))
