"""REST API for CIS attestations: signing keys (`iam/signing-keys/`), attesting an image and its status
(`compute/images/<id>/attest/` and `.../attestation/`, routed by images.api.ImageViewSet) and each
project's image policy with the images it would deny (`compute/image-policies/`). Every write is one
call into images.attestation."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from clouddigit.api.base import valid_data
from clouddigit.compute.models import Account, Project
from clouddigit.compute.permissions import Perm
from clouddigit.errors import InvalidRequest
from images import attestation
from images.models import Attestation, Image, ImagePolicy, SigningKey

# --- Signing keys -----------------------------------------------------------------------------------


class SigningKeySerializer(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    revoked = serializers.BooleanField(read_only=True)

    class Meta:
        model = SigningKey
        fields = [
            "id",
            "name",
            "account",
            "owner",
            "public_key",
            "fingerprint",
            "created_at",
            "revoked",
            "revoked_at",
            "revoked_by",
        ]


class RegisterKeySerializer(serializers.Serializer):
    account = serializers.SlugField(help_text="the account slug")
    name = serializers.CharField(max_length=63)
    public_key = serializers.CharField(
        help_text="Ed25519 public key: raw 32 bytes in base64, or a PEM `-----BEGIN PUBLIC KEY-----` block",
        trim_whitespace=False,
    )


def _account_named(user, slug: str) -> Account:
    """An account the caller works in (sees one of its projects); another account is never revealed."""
    account = Account.objects.filter(slug=slug).first()
    if account is None or not Project.objects.visible_to(user).filter(account=account).exists():
        raise InvalidRequest(f"There is no account {slug!r} that you can see.", field="account")
    return account


class SigningKeyViewSet(viewsets.ReadOnlyModelViewSet):
    """CIS attestors' Ed25519 public keys. Register yours (`POST`), list them, revoke one (`revoke`):
    attestations made with a revoked key stop counting."""

    serializer_class = SigningKeySerializer

    def get_queryset(self):
        keys = attestation.keys_visible_to(self.request.user)
        params = self.request.query_params
        if params.get("account"):
            keys = keys.filter(account__slug=params["account"])
        if params.get("owner"):
            keys = keys.filter(owner__username=params["owner"])
        if params.get("name"):
            keys = keys.filter(name=params["name"])
        if params.get("revoked") in ("true", "false"):
            keys = keys.filter(revoked_at__isnull=params["revoked"] == "false")
        return keys.order_by("account__slug", "name")

    @extend_schema(
        parameters=[
            OpenApiParameter("account", str, description="account slug"),
            OpenApiParameter("owner", str, description="username"),
            OpenApiParameter("name", str, description="exact key name"),
            OpenApiParameter("revoked", bool),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=RegisterKeySerializer, responses={201: SigningKeySerializer})
    def create(self, request, *args, **kwargs):
        """Register your public key in an account (needs image.cis-attestor on it or one of its projects).
        Never send the private key."""
        data = valid_data(RegisterKeySerializer, request)
        key = attestation.register_key(
            actor=request.user,
            account=_account_named(request.user, data["account"]),
            name=data["name"],
            public_key=data["public_key"],
        )
        return Response(SigningKeySerializer(key).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: SigningKeySerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Revoke a key (its owner, or someone who may grant roles in the account)."""
        key = attestation.revoke_key(actor=request.user, key=self.get_object())
        return Response(SigningKeySerializer(key).data)


# --- Attesting an image (actions of images.api.ImageViewSet) ----------------------------------------


class AttestationSerializer(serializers.ModelSerializer):
    key = serializers.UUIDField(source="key_id", read_only=True)
    key_name = serializers.CharField(source="key.name", read_only=True)
    key_fingerprint = serializers.CharField(source="key.fingerprint", read_only=True)
    key_revoked_at = serializers.DateTimeField(source="key.revoked_at", read_only=True, allow_null=True)

    class Meta:
        model = Attestation
        fields = [
            "id",
            "image",
            "key",
            "key_name",
            "key_fingerprint",
            "key_revoked_at",
            "signer",
            "image_sha256",
            "cis_level",
            "signature",
            "created_at",
        ]


class AttestSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="your signing key's id, or its name in the image's account")
    signature = serializers.CharField(
        help_text="base64 Ed25519 signature of images.attestation.message(sha256, cis-level, your username)"
    )


class AttestationStatusSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    reason = serializers.CharField(help_text="why no attestation counts; empty when one does")
    attestation = AttestationSerializer(allow_null=True, help_text="the attestation that counts")
    attestations = AttestationSerializer(many=True, help_text="every attestation, newest first")


def _signing_key(user, image: Image, reference: str) -> SigningKey:
    keys = attestation.keys_visible_to(user)
    if image.project is not None:
        keys = keys.filter(account=image.project.account_id)
    try:
        found = keys.filter(pk=uuid.UUID(reference)).first()
    except ValueError:
        found = keys.filter(name=reference).first()
    if found is None:
        where = f" in {image.project.account}" if image.project is not None else ""
        raise InvalidRequest(
            f"There is no signing key {reference!r}{where} that you can see; register one first "
            "(clouddigit iam signing-key create).",
            field="key",
        )
    return found


def attest(request, image: Image) -> Response:
    data = valid_data(AttestSerializer, request)
    made = attestation.attest_image(
        actor=request.user,
        image=image,
        key=_signing_key(request.user, image, data["key"].strip()),
        signature=data["signature"],
    )
    return Response(AttestationSerializer(made).data, status=status.HTTP_201_CREATED)


def attestation_status(image: Image) -> Response:
    current, reason = attestation.attestation_status(image)
    history = image.attestations.select_related("key")
    body = {"valid": current is not None, "reason": reason, "attestation": current, "attestations": history}
    return Response(AttestationStatusSerializer(body).data)


# --- Project image policy ---------------------------------------------------------------------------


class ImagePolicySerializer(serializers.ModelSerializer):
    project_id = serializers.UUIDField(source="id", read_only=True)
    project = serializers.CharField(source="__str__", read_only=True)
    attestation = serializers.SerializerMethodField(help_text="off, audit or enforce")
    updated_by = serializers.SerializerMethodField()
    updated_at = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["project_id", "project", "attestation", "updated_by", "updated_at"]

    def _policy(self, project) -> ImagePolicy | None:
        return getattr(project, "image_policy", None)

    def get_attestation(self, project) -> str:
        policy = self._policy(project)
        return policy.require_attestation if policy else ImagePolicy.Attestation.OFF.value

    def get_updated_by(self, project) -> str | None:
        policy = self._policy(project)
        return policy.updated_by if policy else None

    def get_updated_at(self, project) -> str | None:
        policy = self._policy(project)
        return policy.updated_at.isoformat() if policy else None


class SetPolicySerializer(serializers.Serializer):
    attestation = serializers.ChoiceField(
        choices=ImagePolicy.Attestation.choices,
        help_text="off; audit (record what would be denied); enforce (deny VM-create without a valid "
        "attestation)",
    )


class WouldDenySerializer(serializers.Serializer):
    image = serializers.UUIDField(source="image.id")
    name = serializers.CharField(source="image.name")
    region = serializers.CharField(source="image.region_id")
    project = serializers.CharField(source="image.owner_label", help_text="the image's own project")
    reason = serializers.CharField()


class ImagePolicyViewSet(viewsets.ReadOnlyModelViewSet):
    """Each project's image policy (by project id): whether VM-create requires a valid CIS attestation
    (enforce), records what it would deny (audit) or ignores attestations (off)."""

    serializer_class = ImagePolicySerializer

    def get_queryset(self):
        projects = Project.objects.visible_to(self.request.user, Perm.VIEW_IMAGES).select_related(
            "account", "image_policy"
        )
        if self.request.query_params.get("project"):
            projects = projects.filter(
                pk__in=Project.objects.by_reference(self.request.query_params["project"])
            )
        return projects.order_by("account__slug", "slug")

    @extend_schema(
        parameters=[OpenApiParameter("project", str, description="account/project or a project id")]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=SetPolicySerializer, responses={200: ImagePolicySerializer})
    def update(self, request, pk=None):
        """Set the project's attestation policy (needs manage_image_quotas: image quotas and policy)."""
        data = valid_data(SetPolicySerializer, request)
        project = self.get_object()
        attestation.set_policy(actor=request.user, project=project, mode=data["attestation"])
        return Response(ImagePolicySerializer(self.get_queryset().get(pk=project.pk)).data)

    @extend_schema(request=None, responses={200: WouldDenySerializer(many=True)})
    @action(detail=True, methods=["get"], url_path="would-deny")
    def would_deny(self, request, pk=None):
        """The available images offered to the project that enforce would deny now, and why (the
        recorded SHA-256 is compared; files are hashed only at VM-create)."""
        denied = attestation.would_deny(self.get_object())
        return Response(WouldDenySerializer([{"image": i, "reason": r} for i, r in denied], many=True).data)
