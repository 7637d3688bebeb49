"""REST API for snapshots, their restores and snapshot limits. Every write is one call into
snapshots.services; the objects a request names are looked up among what the caller may see."""

from __future__ import annotations

from dataclasses import asdict

from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from clouddigit.access import project_by_reference
from clouddigit.api.base import valid_data, visible_or_400
from clouddigit.compute.models import VM, Volume
from clouddigit.names import validate_name
from snapshots import diagnosis, replication, services
from snapshots.filters import NEWEST_FIRST, SnapshotFilter
from snapshots.models import Restore, Snapshot, SnapshotDisk, SnapshotLimit

# --- Output -----------------------------------------------------------------------------------------


class SnapshotDiskSerializer(serializers.ModelSerializer):
    volume = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="None once the volume is gone"
    )
    layer = serializers.UUIDField(source="layer_id", read_only=True, allow_null=True)
    parent_layer = serializers.SerializerMethodField(help_text="The layer this disk's layer backs onto")

    class Meta:
        model = SnapshotDisk
        fields = [
            "id",
            "volume",
            "volume_name",
            "device",
            "bootable",
            "size_bytes",
            "checksum",
            "layer",
            "parent_layer",
        ]

    def get_parent_layer(self, disk) -> str | None:
        return str(disk.layer.parent_id) if disk.layer and disk.layer.parent_id else None


class RestoreSerializer(serializers.ModelSerializer):
    project = serializers.StringRelatedField(read_only=True)
    snapshot = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    volume = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    vm = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    seconds = serializers.FloatField(read_only=True, allow_null=True, help_text="Time to restore")

    class Meta:
        model = Restore
        fields = [
            "id",
            "snapshot",
            "snapshot_name",
            "project",
            "kind",
            "name",
            "state",
            "volume",
            "vm",
            "warnings",
            "last_error",
            "requested_by",
            "started_at",
            "finished_at",
            "seconds",
        ]


class SnapshotSerializer(serializers.ModelSerializer):
    project = serializers.StringRelatedField(read_only=True)
    vm = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    source_snapshot = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="A cross-region copy: the snapshot it copies"
    )
    source_region = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="A cross-region copy: the region it was copied from"
    )
    disks = SnapshotDiskSerializer(many=True, read_only=True)

    class Meta:
        model = Snapshot
        fields = [
            "id",
            "name",
            "project",
            "region",
            "kind",
            "origin",
            "policy_name",
            "vm",
            "vm_name",
            "state",
            "step",
            "stuck_reason",
            "last_error",
            "consistency_requested",
            "consistency_achieved",
            "consistency_reason",
            "tags",
            "billed_bytes",
            "reclaimable_bytes",
            "source_snapshot",
            "source_region",
            "bytes_total",
            "bytes_done",
            "bytes_sent",
            "hold",
            "expires_at",
            "created_by",
            "created_at",
            "completed_at",
            "disks",
        ]


class SnapshotDetailSerializer(SnapshotSerializer):
    rollback_of = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    vm_definition = serializers.SerializerMethodField(help_text="flavor, VPC, NICs ... (no domain XML)")
    restores = RestoreSerializer(many=True, read_only=True)

    class Meta(SnapshotSerializer.Meta):
        fields = [
            *SnapshotSerializer.Meta.fields,
            "step_started_at",
            "sizes_measured_at",
            "rollback_of",
            "vm_definition",
            "restores",
        ]

    def get_vm_definition(self, snapshot) -> dict:
        return {key: value for key, value in snapshot.vm_definition.items() if key != "domain_xml"}


class FindingSerializer(serializers.Serializer):
    cause = serializers.CharField()
    check = serializers.CharField()
    fix = serializers.CharField()
    detail = serializers.CharField()


class DiagnosisSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    state = serializers.CharField()
    step = serializers.CharField()
    step_started_at = serializers.DateTimeField(allow_null=True)
    stuck_reason = serializers.CharField()
    last_error = serializers.CharField()
    findings = FindingSerializer(many=True, help_text="Current waiting reasons, most likely first")


class SnapshotLimitSerializer(serializers.ModelSerializer):
    project = serializers.StringRelatedField(read_only=True, allow_null=True)
    volume = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = SnapshotLimit
        fields = ["id", "project", "volume", "limit", "ticket", "set_by", "created_at"]


# --- Input ------------------------------------------------------------------------------------------


class SnapshotCreateSerializer(serializers.Serializer):
    volume = serializers.UUIDField(required=False, help_text="A volume snapshot of this volume")
    vm = serializers.UUIDField(required=False, help_text="A VM snapshot of all this VM's volumes")
    name = serializers.CharField(required=False, allow_blank=True, default="", validators=[validate_name])
    consistency = serializers.ChoiceField(
        choices=Snapshot.Consistency.choices, default=Snapshot.Consistency.APPLICATION
    )
    tags = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)


class RestoreToVolumeSerializer(serializers.Serializer):
    name = serializers.CharField(validators=[validate_name], help_text="The new volume's name")
    disk = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="Which disk of a multi-volume snapshot: its device (vdb), its volume's name or its id",
    )


class RestoreToVMSerializer(serializers.Serializer):
    name = serializers.CharField(validators=[validate_name], help_text="The new VM's name")
    vpc = serializers.CharField()
    flavor = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Default: as taken"
    )
    acknowledge_warnings = serializers.BooleanField(default=False)
    keep_tags = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        allow_null=True,
        default=None,
        help_text="Keys of the source VM's tags to keep. Default: all but those that would put the new VM "
        "under a snapshot policy of the project (the restore's warnings name them).",
    )


class SnapshotCopySerializer(serializers.Serializer):
    target_region = serializers.CharField(help_text="The region whose catalogue receives the copy")
    source_region = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="The snapshot's region (checked when given)"
    )
    name = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        validators=[validate_name],
        help_text="Default: as the source",
    )


class RollbackSerializer(serializers.Serializer):
    # Not required here: the service's refusal says what to type.
    confirm = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="The name of the VM or volume rolled back"
    )


class HoldSerializer(serializers.Serializer):
    hold = serializers.BooleanField(default=True)


class TagChangesSerializer(serializers.Serializer):
    add = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)
    remove = serializers.ListField(child=serializers.CharField(), required=False, default=list)


class LimitRequestSerializer(serializers.Serializer):
    volume = serializers.UUIDField(required=False, help_text="Raise the limit of this volume")
    project = serializers.CharField(required=False, help_text="or of every volume in this project")
    limit = serializers.IntegerField()
    ticket = serializers.CharField(allow_blank=True, help_text="The support ticket approving it")


# --- Views ------------------------------------------------------------------------------------------


def visible_restores(user):
    return Restore.objects.visible_to(user).select_related("project__account")


def _restore(user, restore: Restore) -> Response:
    # As the caller may see it now: the restore may already have finished (see SnapshotViewSet._snapshot).
    current = visible_restores(user).filter(pk=restore.pk).first()
    return Response(RestoreSerializer(current or restore).data, status=status.HTTP_202_ACCEPTED)


class SnapshotViewSet(viewsets.ReadOnlyModelViewSet):
    """Snapshots of volumes and VMs. Writes answer 202: the work goes on in the background; poll the
    snapshot (or `diagnose`) for its state."""

    filterset_class = SnapshotFilter

    def get_queryset(self):
        queryset = (
            Snapshot.objects.visible_to(self.request.user)
            .select_related("project__account")
            .prefetch_related(Prefetch("disks", queryset=SnapshotDisk.objects.select_related("layer")))
        )
        if self.action == "list":
            queryset = queryset.defer("vm_definition")  # holds the domain XML; only the detail shows it
        else:
            restores = Restore.objects.select_related("project__account")
            queryset = queryset.prefetch_related(Prefetch("restores", queryset=restores))
        return queryset.order_by(*NEWEST_FIRST)

    def get_serializer_class(self):
        return SnapshotSerializer if self.action == "list" else SnapshotDetailSerializer

    def _snapshot(self, snapshot: Snapshot, code: int = status.HTTP_202_ACCEPTED) -> Response:
        # The row as the caller may see it now (tasks may already have moved it on); a delete that has
        # already finished leaves only the object the service returned.
        current = self.get_queryset().filter(pk=snapshot.pk).first()
        return Response(SnapshotDetailSerializer(current or snapshot).data, status=code)

    @extend_schema(request=SnapshotCreateSerializer, responses={202: SnapshotDetailSerializer})
    def create(self, request, *args, **kwargs):
        """Snapshot one volume (`volume`) or every volume of a VM (`vm`)."""
        data = valid_data(SnapshotCreateSerializer, request)
        user = request.user
        snapshot = services.create_snapshot(
            actor=user,
            volume=visible_or_400(
                Volume.objects.visible_to(user), data.get("volume"), field="volume", what="volume"
            ),
            vm=visible_or_400(VM.objects.visible_to(user), data.get("vm"), field="vm", what="VM"),
            name=data["name"],
            consistency=data["consistency"],
            tags=data["tags"],
        )
        return self._snapshot(snapshot)

    @extend_schema(
        parameters=[
            OpenApiParameter("confirm", str, required=True, description="the snapshot's name, to confirm")
        ],
        request=None,
        responses={202: SnapshotDetailSerializer},
    )
    def destroy(self, request, *args, **kwargs):
        """Delete: the snapshot is `deleting` while its layers merge into their children.
        `?confirm=NAME` repeats the snapshot's name: its point in time is gone for good."""
        snapshot = services.delete_snapshot(
            actor=request.user, snapshot=self.get_object(), confirm=request.query_params.get("confirm", "")
        )
        return self._snapshot(snapshot)

    @extend_schema(request=RestoreToVolumeSerializer, responses={202: RestoreSerializer})
    @action(detail=True, methods=["post"])
    def restore(self, request, pk=None):
        """Restore to a new volume; the original volume is untouched."""
        snapshot = self.get_object()
        data = valid_data(RestoreToVolumeSerializer, request)
        disk = services.disk_named(snapshot, data["disk"])
        restore = services.restore_to_volume(
            actor=request.user, snapshot=snapshot, name=data["name"], disk=disk
        )
        return _restore(request.user, restore)

    @extend_schema(request=RestoreToVMSerializer, responses={202: RestoreSerializer})
    @action(detail=True, methods=["post"], url_path="restore-vm")
    def restore_vm(self, request, pk=None):
        """Restore a VM snapshot to a new VM (its volumes on the same devices), started when ready."""
        snapshot = self.get_object()
        data = valid_data(RestoreToVMSerializer, request)
        restore = services.restore_to_vm(
            actor=request.user,
            snapshot=snapshot,
            name=data["name"],
            vpc=data["vpc"],
            flavor=data["flavor"] or None,
            acknowledge_warnings=data["acknowledge_warnings"],
            keep_tags=data["keep_tags"],
        )
        return _restore(request.user, restore)

    @extend_schema(request=SnapshotCopySerializer, responses={202: SnapshotDetailSerializer})
    @action(detail=True, methods=["post"])
    def copy(self, request, pk=None):
        """Copy to another region's catalogue; answers with the copy (`creating` until every byte has
        landed there and been verified; `bytes_total` / `bytes_sent` show its progress)."""
        data = valid_data(SnapshotCopySerializer, request)
        copy = replication.copy_snapshot(
            actor=request.user,
            snapshot=self.get_object(),
            target_region=data["target_region"],
            source_region=data["source_region"],
            name=data["name"],
        )
        return self._snapshot(copy)

    @extend_schema(request=RollbackSerializer, responses={202: SnapshotDetailSerializer})
    @action(detail=True, methods=["post"])
    def rollback(self, request, pk=None):
        """Revert the volume (or the stopped VM's volumes) to the snapshot. Answers the safety snapshot
        that keeps the replaced data for 24 hours."""
        snapshot = self.get_object()
        data = valid_data(RollbackSerializer, request)
        safety = services.rollback(actor=request.user, snapshot=snapshot, confirm=data["confirm"])
        return self._snapshot(safety)

    @extend_schema(request=TagChangesSerializer, responses={200: SnapshotDetailSerializer})
    @action(detail=True, methods=["post"])
    def tags(self, request, pk=None):
        """Add (or overwrite) and remove tags."""
        snapshot = self.get_object()
        data = valid_data(TagChangesSerializer, request)
        snapshot = services.set_tags(
            actor=request.user, snapshot=snapshot, add=data["add"], remove=data["remove"]
        )
        return self._snapshot(snapshot, status.HTTP_200_OK)

    @extend_schema(request=HoldSerializer, responses={200: SnapshotDetailSerializer})
    @action(detail=True, methods=["post"])
    def hold(self, request, pk=None):
        """Pin (`{"hold": true}`) or release a snapshot: retention never deletes a held snapshot."""
        snapshot = self.get_object()
        data = valid_data(HoldSerializer, request)
        snapshot = services.set_hold(actor=request.user, snapshot=snapshot, hold=data["hold"])
        return self._snapshot(snapshot, status.HTTP_200_OK)

    @extend_schema(request=None, responses={200: DiagnosisSerializer})
    @action(detail=True, methods=["get"])
    def diagnose(self, request, pk=None):
        """What the snapshot's operation is waiting for (none: nothing is waiting)."""
        snapshot = self.get_object()
        answer = {
            field: getattr(snapshot, field)
            for field in ("id", "name", "state", "step", "step_started_at", "stuck_reason", "last_error")
        }
        answer["findings"] = [asdict(finding) for finding in diagnosis.diagnose(snapshot)]
        return Response(DiagnosisSerializer(answer).data)

    @extend_schema(request=None, responses={202: SnapshotDetailSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Queue a failed or interrupted create or delete again; it goes on where it stopped."""
        return self._snapshot(services.retry(actor=request.user, snapshot=self.get_object()))


class RestoreViewSet(mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """Restores (to new volumes and VMs) with their time to restore, newest first."""

    serializer_class = RestoreSerializer
    filterset_fields = ["snapshot", "state", "kind"]

    def get_queryset(self):
        return visible_restores(self.request.user).order_by("-started_at", "id")

    @extend_schema(request=None, responses={202: RestoreSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Go on with a failed or interrupted restore; the files it already made are reused."""
        return _restore(request.user, services.retry_restore(actor=request.user, restore=self.get_object()))

    def destroy(self, request, *args, **kwargs):
        """Delete a failed restore with the volume or VM it had begun to make."""
        services.delete_restore(actor=request.user, restore=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class SnapshotLimitViewSet(mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Raise the snapshots-per-volume limit of one volume or a whole project (with a ticket)."""

    serializer_class = SnapshotLimitSerializer

    @extend_schema(request=LimitRequestSerializer, responses={201: SnapshotLimitSerializer})
    def create(self, request, *args, **kwargs):
        data = valid_data(LimitRequestSerializer, request)
        user = request.user
        project = project_by_reference(user, data["project"]) if data.get("project") else None
        limit = services.raise_limit(
            actor=user,
            limit=data["limit"],
            ticket=data["ticket"],
            project=project,
            volume=visible_or_400(
                Volume.objects.visible_to(user), data.get("volume"), field="volume", what="volume"
            ),
        )
        return Response(SnapshotLimitSerializer(limit).data, status=status.HTTP_201_CREATED)
