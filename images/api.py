"""REST API for images: the catalogue, imports (create, then PUT the bytes), promotion, copies, sharing,
deprecation, the VM-create picker, its "why is my image missing?" helper and creating a VM from an
image. Every write is one call into images.services or images.launch."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from clouddigit.access import project_by_reference
from clouddigit.api.base import region_named, valid_data, visible_or_400
from clouddigit.compute.api import VMSerializer, VMViewSet
from clouddigit.compute.models import Project, Region
from clouddigit.errors import InvalidRequest
from clouddigit.names import validate_name
from images import attestation_api, inspection, launch, services
from images.filters import ImageAPIFilter
from images.models import Image, ImageQuota
from snapshots.models import Snapshot

# --- Output -----------------------------------------------------------------------------------------


class ImageSerializer(serializers.ModelSerializer):
    project = serializers.SerializerMethodField(help_text="account/project; null for Cloud Digit images")
    region = serializers.CharField(source="region_id", read_only=True)
    deprecated = serializers.BooleanField(source="is_deprecated", read_only=True)
    missing_tags = serializers.ListField(child=serializers.CharField(), read_only=True)
    hint = serializers.CharField(read_only=True, help_text="What to do about a failed upload")
    shared_with = serializers.SerializerMethodField(help_text="Projects it is shared with")
    upload_url = serializers.SerializerMethodField(help_text="Where to PUT the file while uploading")

    class Meta:
        model = Image
        fields = [
            "id",
            "name",
            "slot",
            "project",
            "region",
            "description",
            "visibility",
            "source",
            "source_snapshot",
            "copied_from",
            "state",
            "step",
            "last_error",
            "hint",
            "declared_format",
            "detected_format",
            "virtual_size",
            "upload_bytes",
            "stored_bytes",
            "sha256",
            "guest_sha256",
            "tags",
            "missing_tags",
            "openscap_score",
            "deprecated",
            "deprecated_at",
            "deprecation_note",
            "shared_with",
            "created_by",
            "created_at",
            "upload_url",
        ]

    def get_project(self, image) -> str | None:
        return str(image.project) if image.project_id else None

    def get_shared_with(self, image) -> list[str]:
        return [str(share.project) for share in image.shares.all()]

    def get_upload_url(self, image) -> str | None:
        if image.state != Image.State.UPLOADING:
            return None
        request = self.context.get("request")
        path = f"/api/v1/compute/images/{image.id}/file/"
        return request.build_absolute_uri(path) if request else path


class ReasonSerializer(serializers.Serializer):
    image = serializers.UUIDField(allow_null=True)
    name = serializers.CharField(allow_null=True)
    region = serializers.CharField(allow_null=True)
    project = serializers.CharField(allow_null=True)
    reason = serializers.CharField()
    fix = serializers.CharField()


class ImageQuotaSerializer(serializers.ModelSerializer):
    project = serializers.StringRelatedField(read_only=True)

    class Meta:
        model = ImageQuota
        fields = ["id", "project", "limit", "ticket", "set_by", "created_at"]


# --- Input ------------------------------------------------------------------------------------------

TAGS = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)


class ImportSerializer(serializers.Serializer):
    project = serializers.CharField(help_text="account/project or a project id")
    region = serializers.CharField(required=False, help_text="Default: the console's default region")
    name = serializers.CharField(validators=[validate_name])
    format = serializers.CharField(help_text=f"The file's format: {', '.join(inspection.FORMATS)}")
    size_bytes = serializers.IntegerField(required=False, min_value=0, help_text="Refused early if too large")
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=300)
    tags = TAGS


class PromoteSerializer(serializers.Serializer):
    snapshot = serializers.UUIDField()
    name = serializers.CharField(validators=[validate_name])
    device = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="One disk of a VM snapshot, e.g. vda"
    )
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=300)
    tags = TAGS


class CopySerializer(serializers.Serializer):
    region = serializers.CharField()
    name = serializers.CharField(required=False, allow_blank=True, default="", validators=[validate_name])


class ShareSerializer(serializers.Serializer):
    project = serializers.CharField(help_text="account/project or a project id")


class VisibilitySerializer(serializers.Serializer):
    visibility = serializers.ChoiceField(choices=Image.Visibility.choices)


class DeprecateSerializer(serializers.Serializer):
    at = serializers.DateTimeField(required=False, allow_null=True, default=None, help_text="Default: now")
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=300)


class TagsSerializer(serializers.Serializer):
    tags = serializers.DictField(child=serializers.CharField(allow_blank=True))


class LimitSerializer(serializers.Serializer):
    project = serializers.CharField()
    limit = serializers.IntegerField()
    ticket = serializers.CharField(allow_blank=True)


class RawFileParser(BaseParser):
    """Declares that the upload takes any body; the view streams `request.stream` itself."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover - never called
        raise InvalidRequest("Send the image file as the raw request body.")


# --- Views ------------------------------------------------------------------------------------------

QUERY = [
    OpenApiParameter("project", str, description="account/project or a project id"),
    OpenApiParameter("region", str),
]


class ImageViewSet(mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """The image catalogue: stock and hardened images plus the custom images you may see."""

    serializer_class = ImageSerializer
    filterset_class = ImageAPIFilter

    def get_queryset(self):
        user = self.request.user
        shared = self.request.query_params.get("shared")
        images = Image.objects.shared_with(user) if shared else Image.objects.visible_to(user)
        return images.for_display().order_by("slot", "name", "region_id")

    def _image(self, image: Image, code: int = status.HTTP_200_OK) -> Response:
        current = (
            Image.objects.visible_to(self.request.user).for_display().filter(pk=image.pk).first() or image
        )
        return Response(ImageSerializer(current, context={"request": self.request}).data, status=code)

    @extend_schema(
        parameters=[OpenApiParameter("shared", bool, description="Only images shared with you")],
        responses={200: ImageSerializer(many=True)},
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=ImportSerializer, responses={201: ImageSerializer})
    def create(self, request, *args, **kwargs):
        """Start an import: answers the image (state `uploading`) and the `upload_url` to PUT the file to."""
        data = valid_data(ImportSerializer, request)
        image = services.start_import(
            actor=request.user,
            project=project_by_reference(request.user, data["project"]),
            region=region_named(data.get("region") or settings.DEFAULT_REGION),
            name=data["name"],
            declared_format=data["format"],
            size_bytes=data.get("size_bytes"),
            description=data["description"],
            tags=data["tags"],
        )
        return self._image(image, status.HTTP_201_CREATED)

    @extend_schema(request={"application/octet-stream": bytes}, responses={202: ImageSerializer})
    @action(detail=True, methods=["put"], parser_classes=[RawFileParser])
    def file(self, request, pk=None):
        """The image file as the raw body. Its headers are inspected before anything else reads it; a
        refused file answers 400 `ImageUploadFailed` and leaves the image `failed` with the reason."""
        image = self.get_object()
        length = request.META.get("CONTENT_LENGTH")
        image = services.receive_upload(
            actor=request.user,
            image=image,
            stream=request.stream,
            length=int(length) if length and length.isdigit() else None,
        )
        return self._image(image, status.HTTP_202_ACCEPTED)

    def destroy(self, request, *args, **kwargs):
        services.delete_image(actor=request.user, image=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=PromoteSerializer, responses={202: ImageSerializer})
    @action(detail=False, methods=["post"])
    def promote(self, request):
        """Promote a volume snapshot (or one disk of a VM snapshot, with `device`) to an image."""
        data = valid_data(PromoteSerializer, request)
        try:
            snapshot = visible_or_400(
                Snapshot.objects.visible_to(request.user), data["snapshot"], field="snapshot", what="snapshot"
            )
        except InvalidRequest as error:
            error.message += services.promote_role_hint(request.user)
            raise
        image = services.promote_snapshot(
            actor=request.user,
            snapshot=snapshot,
            name=data["name"],
            device=data["device"],
            description=data["description"],
            tags=data["tags"],
        )
        return self._image(image, status.HTTP_202_ACCEPTED)

    @extend_schema(request=CopySerializer, responses={202: ImageSerializer})
    @action(detail=True, methods=["post"])
    def copy(self, request, pk=None):
        """Copy the image to another region and/or another project of the same account."""
        data = valid_data(CopySerializer, request)
        image = self.get_object()
        image = services.copy_image(
            actor=request.user,
            image=image,
            region=region_named(data["region"]) if data.get("region") else None,
            project=services.sibling_project(image, data["project"]) if data.get("project") else None,
            name=data["name"],
        )
        return self._image(image, status.HTTP_202_ACCEPTED)

    @extend_schema(request=ShareSerializer, responses={200: ImageSerializer})
    @action(detail=True, methods=["post"])
    def share(self, request, pk=None):
        """Share with another project of the same account (image.admin)."""
        image = self.get_object()
        project = services.sibling_project(image, valid_data(ShareSerializer, request)["project"])
        services.share_image(actor=request.user, image=image, project=project)
        return self._image(image)

    @extend_schema(request=ShareSerializer, responses={200: ImageSerializer})
    @action(detail=True, methods=["post"])
    def unshare(self, request, pk=None):
        image = self.get_object()
        project = services.sibling_project(image, valid_data(ShareSerializer, request)["project"])
        services.unshare_image(actor=request.user, image=image, project=project)
        return self._image(image)

    @extend_schema(request=VisibilitySerializer, responses={200: ImageSerializer})
    @action(detail=True, methods=["post"])
    def visibility(self, request, pk=None):
        """`project` (default) or `account` (org-shared: every project of the account; image.admin)."""
        data = valid_data(VisibilitySerializer, request)
        image = services.set_visibility(
            actor=request.user, image=self.get_object(), visibility=data["visibility"]
        )
        return self._image(image)

    @extend_schema(request=DeprecateSerializer, responses={200: ImageSerializer})
    @action(detail=True, methods=["post"])
    def deprecate(self, request, pk=None):
        """Hide from the VM-create picker from `at` (default now) on."""
        data = valid_data(DeprecateSerializer, request)
        image = services.deprecate_image(
            actor=request.user, image=self.get_object(), at=data["at"], note=data["note"]
        )
        return self._image(image)

    @extend_schema(request=None, responses={200: ImageSerializer})
    @action(detail=True, methods=["post"])
    def undeprecate(self, request, pk=None):
        return self._image(services.undeprecate_image(actor=request.user, image=self.get_object()))

    @extend_schema(request=None, responses={202: ImageSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Process a failed or interrupted import, promotion or copy again (a failed upload needs the
        file again: upload it under the same name)."""
        image = services.retry_image(actor=request.user, image=self.get_object())
        return self._image(image, status.HTTP_202_ACCEPTED)

    @extend_schema(request=TagsSerializer, responses={200: ImageSerializer})
    @action(detail=True, methods=["post"])
    def tags(self, request, pk=None):
        """Replace the tags (`created-at` is kept: the platform sets it)."""
        data = valid_data(TagsSerializer, request)
        return self._image(services.set_tags(actor=request.user, image=self.get_object(), tags=data["tags"]))

    @extend_schema(
        parameters=[*QUERY, OpenApiParameter("show_deprecated", bool)],
        responses={200: ImageSerializer(many=True)},
    )
    @action(detail=False, methods=["get"], pagination_class=None, filterset_class=None)
    def picker(self, request):
        """The images you may create a VM from in `project` and `region`."""
        project, region = _where(request)
        show = request.query_params.get("show_deprecated", "") in ("1", "true", "yes")
        images = launch.picker(request.user, project, region, show_deprecated=show)
        return Response(ImageSerializer(images, many=True, context={"request": request}).data)

    @extend_schema(
        parameters=[*QUERY, OpenApiParameter("image", str, description="name or id")],
        responses={200: ReasonSerializer(many=True)},
    )
    @action(
        detail=False, methods=["get"], url_path="why-missing", pagination_class=None, filterset_class=None
    )
    def why_missing(self, request):
        """Why an image is not offered in the picker for `project` and `region`, and the fix."""
        project, region = _where(request)
        reference = request.query_params.get("image", "")
        if not reference:
            raise InvalidRequest("Name the image (its name or id) with ?image=.", field="image")
        reasons = launch.why_missing(request.user, project, region, reference)
        return Response(ReasonSerializer([reason.as_dict() for reason in reasons], many=True).data)

    @extend_schema(
        request=attestation_api.AttestSerializer, responses={201: attestation_api.AttestationSerializer}
    )
    @action(detail=True, methods=["post"])
    def attest(self, request, pk=None):
        """Store your CIS attestation: a signature made with your registered key's private half over
        the image's sha256, its cis-level tag and your username (image.cis-attestor)."""
        return attestation_api.attest(request, self.get_object())

    @extend_schema(responses={200: attestation_api.AttestationStatusSerializer})
    @action(detail=True, methods=["get"])
    def attestation(self, request, pk=None):
        """Whether a valid CIS attestation covers the image now, why not, and every attestation made."""
        return attestation_api.attestation_status(self.get_object())


# --- Create a VM from an image ----------------------------------------------------------------------


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


# The compute app's VMs (read, start, stop) with their create, which is the images app's: a VM is made
# from an image (images.launch). The API's router serves this class at compute/vms. (A comment, not a
# docstring: the schema would show a docstring as the description of every VM operation.)
class VMLaunchViewSet(VMViewSet):
    @extend_schema(request=VMCreateSerializer, responses={202: VMSerializer})
    def create(self, request, *args, **kwargs):
        """Create a VM from an image: it is `creating` until the hypervisor worker has copied the image
        into its boot volume and defined it on a host of the region, then `stopped`, or (by default)
        started."""
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
        return Response(VMSerializer(vm).data, status=status.HTTP_202_ACCEPTED)


def _where(request) -> tuple[Project, Region]:
    params = request.query_params
    if not params.get("project") or not params.get("region"):
        raise InvalidRequest("Pass ?project=account/project&region=<region>.", field="project")
    return project_by_reference(request.user, params["project"]), region_named(params["region"])


class ImageLimitViewSet(mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Raise a project's custom-image limit (default 50) with a ticket reference."""

    serializer_class = ImageQuotaSerializer

    @extend_schema(request=LimitSerializer, responses={201: ImageQuotaSerializer})
    def create(self, request, *args, **kwargs):
        data = valid_data(LimitSerializer, request)
        quota = services.raise_image_limit(
            actor=request.user,
            project=project_by_reference(request.user, data["project"]),
            limit=data["limit"],
            ticket=data["ticket"],
        )
        return Response(ImageQuotaSerializer(quota).data, status=status.HTTP_201_CREATED)
