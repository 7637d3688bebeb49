"""One FilterSet per list: the console list and (later) the API list use the same one."""

from __future__ import annotations

import django_filters
from django import forms
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from clouddigit.compute.flavors import FLAVOR_CHOICES
from clouddigit.compute.models import VM, Volume, parse_tag


class TagField(forms.CharField):
    def clean(self, value):
        value = super().clean(value)
        if not value:
            return None
        return parse_tag(value)


@extend_schema_field(OpenApiTypes.STR)
class TagFilter(django_filters.Filter):
    """`?tag=env=prod`: resources carrying that tag."""

    field_class = TagField

    def filter(self, qs, value):
        if not value:
            return qs
        key, tag_value = value
        return qs.with_tag(key, tag_value)


class VMFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains", label="Name contains")
    state = django_filters.ChoiceFilter(choices=VM.State.choices, empty_label="any")
    flavor = django_filters.ChoiceFilter(choices=FLAVOR_CHOICES, empty_label="any")
    vpc = django_filters.CharFilter(label="VPC")
    tag = TagFilter(label="Tag (key=value)")

    class Meta:
        model = VM
        fields = ["name", "state", "flavor", "vpc", "tag"]


class VolumeFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains", label="Name contains")
    state = django_filters.ChoiceFilter(choices=Volume.State.choices, empty_label="any")
    bootable = django_filters.BooleanFilter(
        widget=forms.Select(choices=[("", "any"), ("true", "yes"), ("false", "no")])
    )
    vm = django_filters.CharFilter(field_name="vm__name", label="Attached to VM")
    tag = TagFilter(label="Tag (key=value)")

    class Meta:
        model = Volume
        fields = ["name", "state", "bootable", "vm", "tag"]
