"""REST API for the inventory: projects, regions, VMs, volumes (read), VM start/stop (services)."""

from __future__ import annotations

import django_filters
from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from clouddigit.access import project_by_reference
from clouddigit.api.base import region_named, valid_data
from clouddigit.compute import services
from clouddigit.compute.filters import VMFilter, VolumeFilter
from clouddigit.compute.models import VM, Project, Region, Volume
from clouddigit.errors import InvalidRequest
from clouddigit.names import shown, validate_name


class ProjectSerializer(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    path = serializers.CharField(source="__str__", read_only=True, help_text="account/project")

    class Meta:
        model = Project
        fields = ["id", "path", "account", "slug", "name"]


class RegionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Region
        fields = ["slug", "name"]


class VolumeSerializer(serializers.ModelSerializer):
    project = serializers.StringRelatedField(read_only=True)
    vm = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    vm_name = serializers.CharField(source="vm.name", read_only=True, allow_null=True, default=None)

    class Meta:
        model = Volume
        fields = [
            "id",
            "name",
            "project",
            "region",
            "size_bytes",
            "state",
            "vm",
            "vm_name",
            "device",
            "bootable",
            "tags",
            "created_at",
        ]


class VMSerializer(serializers.ModelSerializer):
    project = serializers.StringRelatedField(read_only=True)
    host = serializers.CharField(source="host.name", read_only=True)

    class Meta:
        model = VM
        fields = [
            "id",
            "name",
            "project",
            "region",
            "host",
            "flavor",
            "state",
            "vpc",
            "guest_agent",
            "guest_agent_checked_at",
            "tags",
            "last_error",
            "created_at",
        ]


class ProjectReferenceFilter(django_filters.CharFilter):
    """`?project=acme/prod` or `?project=<id>`."""

    def filter(self, qs, value):
        if not value:
            return qs
        return qs.filter(project__in=Project.objects.by_reference(value))


class VMAPIFilter(VMFilter):
    project = ProjectReferenceFilter(help_text="account/project or a project id")
    region = django_filters.CharFilter(field_name="region__slug")

    class Meta(VMFilter.Meta):
        fields = [*VMFilter.Meta.fields, "project", "region"]


class VolumeAPIFilter(VolumeFilter):
    project = ProjectReferenceFilter(help_text="account/project or a project id")
    region = django_filters.CharFilter(field_name="region__slug")

    class Meta(VolumeFilter.Meta):
        fields = [*VolumeFilter.Meta.fields, "project", "region"]


class ProjectViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ProjectSerializer

    def get_queryset(self):
        return Project.objects.visible_to(self.request.user).select_related("account")


class RegionViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = RegionSerializer
    queryset = Region.objects.all()
    lookup_field = "slug"


class VMCreateSerializer(serializers.Serializer):
    project = serializers.CharField(help_text="account/project or a project id")
    region = serializers.CharField(required=False, help_text="Default: the console's default region")
    name = serializers.CharField(validators=[validate_name])
    image = serializers.CharField(help_text="The image's name or id (see images/picker)")
    flavor = serializers.CharField(help_text="e.g. std-2x4")
    vpc = serializers.CharField()
    boot_size_gib = serializers.IntegerField(
        required=False, min_value=1, help_text="Default: the image's size"
    )
    tags = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)
    start = serializers.BooleanField(default=True)


class TagsPatchSerializer(serializers.Serializer):
    tags = serializers.DictField(
        child=serializers.CharField(allow_blank=True, allow_null=True),
        help_text='A JSON merge patch of the tags: {"env": "prod"} sets a tag, {"env": null} removes it.',
    )


def patch_tags(request, obj, service, **target):
    """PATCH of a VM's or volume's tags (the only field a PATCH changes), through `service`."""
    data = valid_data(TagsPatchSerializer, request)
    return service(actor=request.user, tags=services.merged_tags(obj.tags, data["tags"]), **target)


class VMViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = VMSerializer
    filterset_class = VMAPIFilter

    @extend_schema(request=VMCreateSerializer, responses={201: VMSerializer})
    def create(self, request, *args, **kwargs):
        """Create a VM from an image: its boot volume is a copy of the image, defined on a host of the
        region and (by default) started."""
        from images import launch

        data = valid_data(VMCreateSerializer, request)
        project = project_by_reference(request.user, data["project"])
        region = region_named(data.get("region") or settings.DEFAULT_REGION)
        vm = launch.launch_vm(
            actor=request.user,
            project=project,
            region=region,
            image=launch.image_named(request.user, project, region, data["image"]),
            name=data["name"],
            flavor=data["flavor"],
            vpc=data["vpc"],
            boot_size_bytes=data["boot_size_gib"] * 2**30 if data.get("boot_size_gib") else None,
            tags=data["tags"],
            start=data["start"],
        )
        return Response(VMSerializer(vm).data, status=status.HTTP_201_CREATED)

    def get_queryset(self):
        return (
            VM.objects.visible_to(self.request.user)
            .select_related("project__account", "host")
            .order_by("project__account__slug", "project__slug", "name")
        )

    def _power(self, request, operation):
        vm = operation(actor=request.user, vm=self.get_object())
        return Response(VMSerializer(vm).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: VMSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        """Queue a start; the VM is `starting` until the hypervisor worker has started it."""
        return self._power(request, services.start_vm)

    @extend_schema(request=None, responses={202: VMSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        """Queue a stop; the VM is `stopping` until the hypervisor worker has stopped it."""
        return self._power(request, services.stop_vm)

    @extend_schema(request=TagsPatchSerializer, responses={200: VMSerializer})
    def partial_update(self, request, *args, **kwargs):
        """Change the VM's tags (they decide which snapshot policies cover it)."""
        vm = self.get_object()
        return Response(VMSerializer(patch_tags(request, vm, services.set_vm_tags, vm=vm)).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("confirm", str, required=True, description="the VM's name, to confirm"),
            OpenApiParameter(
                "keep_volume", str, many=True, description="a volume (name or id) to keep, detached"
            ),
            OpenApiParameter("delete_volume", str, many=True, description="a volume (name or id) to delete"),
        ],
        request=None,
        responses={202: VMSerializer},
    )
    def destroy(self, request, *args, **kwargs):
        """Delete a stopped VM: it is `deleting` until the hypervisor worker has removed its domain and
        the volumes not kept. Unless named, the boot volume is deleted and data volumes are kept."""
        query = request.query_params
        fates = {name: services.VolumeFate.KEEP for name in query.getlist("keep_volume")}
        for name in query.getlist("delete_volume"):
            if name in fates:
                raise InvalidRequest(
                    f"Volume {shown(name)} is both kept and deleted; say one.", field="volumes"
                )
            fates[name] = services.VolumeFate.DELETE
        vm = services.delete_vm(
            actor=request.user, vm=self.get_object(), confirm=query.get("confirm", ""), volumes=fates
        )
        return Response(VMSerializer(vm).data, status=status.HTTP_202_ACCEPTED)


class VolumeViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = VolumeSerializer
    filterset_class = VolumeAPIFilter

    @extend_schema(request=TagsPatchSerializer, responses={200: VolumeSerializer})
    def partial_update(self, request, *args, **kwargs):
        """Change the volume's tags."""
        volume = self.get_object()
        return Response(
            VolumeSerializer(patch_tags(request, volume, services.set_volume_tags, volume=volume)).data
        )

    def get_queryset(self):
        return (
            Volume.objects.visible_to(self.request.user)
            .select_related("project__account", "vm")
            .order_by("project__account__slug", "project__slug", "name")
        )
