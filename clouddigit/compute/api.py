"""REST API for the inventory: projects, regions, VMs, volumes, VM start/stop and the volume lifecycle
(create, attach, detach, resize, delete), each a call into compute.services."""

from __future__ import annotations

import django_filters
from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from clouddigit.access import project_by_reference
from clouddigit.api.base import region_named, valid_data
from clouddigit.compute import services
from clouddigit.compute.filters import VMFilter, VolumeFilter
from clouddigit.compute.models import VM, Project, Region, Volume
from clouddigit.errors import InvalidRequest
from clouddigit.names import shown


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
            "resize_to_bytes",
            "state",
            "vm",
            "vm_name",
            "device",
            "bootable",
            "tags",
            "last_error",
            "created_at",
        ]


class VolumeCreateSerializer(serializers.Serializer):
    project = serializers.CharField(help_text="account/project or a project id")
    region = serializers.CharField(required=False, help_text="Default: the console's default region")
    # No length or range bounds here: the service refuses with the same words in console, API and CLI.
    name = serializers.CharField()
    size_gib = serializers.IntegerField(help_text="Whole GiB, from 1 to the region's maximum")
    tags = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)


class VolumeAttachSerializer(serializers.Serializer):
    vm = serializers.CharField(help_text="The VM's id or name, in the volume's project and region")
    boot = serializers.BooleanField(default=False, help_text="Attach as the VM's boot disk (vda, sda)")
    device = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="vdb, vdc ... (default: the next free one)"
    )


class VolumeResizeSerializer(serializers.Serializer):
    size_gib = serializers.IntegerField(help_text="The new size in GiB: larger than the current one")


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


class TagsPatchSerializer(serializers.Serializer):
    tags = serializers.DictField(
        child=serializers.CharField(allow_blank=True, allow_null=True),
        help_text='A JSON merge patch of the tags: {"env": "prod"} sets a tag, {"env": null} removes it.',
    )


def patch_tags(request, obj, service, **target):
    """PATCH of a VM's or volume's tags (the only field a PATCH changes), through `service`."""
    data = valid_data(TagsPatchSerializer, request)
    return service(actor=request.user, tags=services.merged_tags(obj.tags, data["tags"]), **target)


# VMs and their power. A VM is created from an image: images.api.VMLaunchViewSet adds the create to
# this class, and the API serves that one at compute/vms.
class VMViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = VMSerializer
    filterset_class = VMAPIFilter

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

    @extend_schema(request=None, responses={202: VMSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Create a VM whose create failed (state `error`) again; it is `creating` until the hypervisor
        worker has made its boot volume and defined it."""
        return self._power(request, services.retry_vm)

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


class VolumeViewSet(mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = VolumeSerializer
    filterset_class = VolumeAPIFilter

    @extend_schema(request=VolumeCreateSerializer, responses={202: VolumeSerializer})
    def create(self, request, *args, **kwargs):
        """Create an empty volume (a qcow2 file in the region) of `size_gib` GiB: it is `creating` until
        the hypervisor worker has made its file, then `available`."""
        data = valid_data(VolumeCreateSerializer, request)
        project = project_by_reference(request.user, data["project"])
        volume = services.create_empty_volume(
            actor=request.user,
            project=project,
            region=region_named(data.get("region") or settings.DEFAULT_REGION),
            name=data["name"],
            size_gib=data["size_gib"],
            tags=data["tags"],
        )
        return Response(VolumeSerializer(volume).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=VolumeAttachSerializer, responses={200: VolumeSerializer})
    @action(detail=True, methods=["post"])
    def attach(self, request, pk=None):
        """Attach to a VM of the volume's project and region: as its boot disk (the VM stopped), or as a
        secondary disk at `device` or the next free one (hot-plugged when the VM runs)."""
        data = valid_data(VolumeAttachSerializer, request)
        volume = services.attach_volume_to(
            actor=request.user,
            volume=self.get_object(),
            vm=data["vm"],
            boot=data["boot"],
            device=data["device"],
        )
        return Response(VolumeSerializer(volume).data)

    @extend_schema(request=None, responses={202: VolumeSerializer})
    @action(detail=True, methods=["post"])
    def detach(self, request, pk=None):
        """Queue a detach: the volume is `detaching` until the hypervisor worker has unplugged it."""
        volume = services.detach_volume(actor=request.user, volume=self.get_object())
        return Response(VolumeSerializer(volume).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=VolumeResizeSerializer, responses={202: VolumeSerializer})
    @action(detail=True, methods=["post"])
    def resize(self, request, pk=None):
        """Grow the volume to `size_gib` (volumes never shrink): it is `resizing` (to `resize_to_bytes`)
        until the hypervisor worker has grown it."""
        data = valid_data(VolumeResizeSerializer, request)
        volume = services.resize_volume(
            actor=request.user, volume=self.get_object(), size_gib=data["size_gib"]
        )
        return Response(VolumeSerializer(volume).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: VolumeSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Create a volume whose create failed (state `error`) again."""
        volume = services.retry_volume(actor=request.user, volume=self.get_object())
        return Response(VolumeSerializer(volume).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[
            OpenApiParameter("confirm", str, description="The volume's name: its data is gone for good"),
            OpenApiParameter(
                "snapshots",
                str,
                enum=list(services.SNAPSHOT_CHOICES),
                description="keep or delete its snapshots",
            ),
        ],
        request=None,
        responses={202: VolumeSerializer},
    )
    def destroy(self, request, *args, **kwargs):
        """Delete a detached volume: `deleting` until its file is gone. A volume with snapshots needs
        `?snapshots=keep` (they still restore) or `?snapshots=delete`."""
        volume = services.delete_volume(
            actor=request.user,
            volume=self.get_object(),
            confirm=request.query_params.get("confirm", ""),
            snapshots=request.query_params.get("snapshots", ""),
        )
        return Response(VolumeSerializer(volume).data, status=status.HTTP_202_ACCEPTED)

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
