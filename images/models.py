"""Images VMs boot from: the catalogue's three slots, sharing, deprecation, quotas and CIS attestations."""

from __future__ import annotations

import re
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from clouddigit.compute.models import Account, Project, RaisedLimit, Region, TaggedQuerySet, validate_tags
from clouddigit.compute.permissions import Perm
from clouddigit.names import validate_name
from clouddigit.operations import Leased
from clouddigit.statemachine import StateMachineMixin

DEFAULT_CUSTOM_IMAGES_PER_PROJECT = 50
# The hardening checklist's tags; `created-at` is set by the platform, the others by the publisher.
CHECKLIST_TAGS = ("os-family", "cis-level", "owner", "created-at")


class ImageQuerySet(TaggedQuerySet):
    view_perm = Perm.VIEW_IMAGES

    def visible_to(self, user, perm: Perm | None = None) -> ImageQuerySet:
        """The catalogue a user sees: platform images, their projects' images, images shared with one of
        their projects, and org-shared images of an account they hold `perm` in."""
        if not user.is_authenticated:
            return self.none()
        projects = Project.objects.visible_to(user, perm or self.view_perm)
        return self.filter(
            Q(project__isnull=True)
            | Q(project__in=projects.values("pk"))
            | Q(shares__project__in=projects.values("pk"))
            | Q(visibility=Image.Visibility.ACCOUNT, project__account__in=projects.values("account"))
        ).distinct()

    def shared_with(self, user) -> ImageQuerySet:
        """ "Shared with me": other projects' images shared with (or org-shared into) a project the user
        works in."""
        projects = Project.objects.visible_to(user, Perm.VIEW_IMAGES)
        return (
            self.visible_to(user)
            .exclude(project__isnull=True)
            .exclude(project__in=projects.values("pk"))
            .filter(
                Q(shares__project__in=projects.values("pk"))
                | Q(visibility=Image.Visibility.ACCOUNT, project__account__in=projects.values("account"))
            )
        )

    def for_display(self) -> ImageQuerySet:
        """With what a list or page shows: the owner and the projects it is shared with."""
        shares = ImageShare.objects.select_related("project__account")
        return self.select_related("project__account").prefetch_related(
            models.Prefetch("shares", queryset=shares)
        )

    def offered_to(self, project: Project) -> ImageQuerySet:
        """Images a VM in `project` may boot from, whatever the user's roles: platform images, the
        project's own, images shared with it and org-shared images of its account."""
        return self.filter(
            Q(project__isnull=True)
            | Q(project=project)
            | Q(shares__project=project)
            | Q(visibility=Image.Visibility.ACCOUNT, project__account=project.account_id)
        ).distinct()

    def not_deprecated(self, now=None) -> ImageQuerySet:
        return self.filter(Q(deprecated_at__isnull=True) | Q(deprecated_at__gt=now or timezone.now()))

    def counting_against_quota(self, project: Project) -> ImageQuerySet:
        return self.filter(project=project, slot=Image.Slot.CUSTOM).exclude(state=Image.State.FAILED)


class Image(StateMachineMixin, Leased):
    class State(models.TextChoices):
        UPLOADING = "uploading", "Waiting for the upload"
        PROCESSING = "processing", "Inspecting and storing"
        AVAILABLE = "available", "Available"
        FAILED = "failed", "Failed"

    TRANSITIONS = {
        State.UPLOADING: {State.PROCESSING, State.FAILED},
        State.PROCESSING: {State.AVAILABLE, State.FAILED},
        State.FAILED: {State.PROCESSING},
    }

    class Slot(models.TextChoices):
        STOCK = "stock", "Stock"
        HARDENED = "hardened", "Cloud Digit hardened"
        CUSTOM = "custom", "Custom"

    class Visibility(models.TextChoices):
        PROJECT = "project", "Project"
        ACCOUNT = "account", "Org-shared (whole account)"

    class Source(models.TextChoices):
        UPLOAD = "upload", "Uploaded"
        SNAPSHOT = "snapshot", "Promoted from a snapshot"
        COPY = "copy", "Copied from another region"
        PLATFORM = "platform", "Published by Cloud Digit"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slot = models.CharField(max_length=10, choices=Slot.choices, default=Slot.CUSTOM)
    project = models.ForeignKey(
        Project,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="images",
        help_text="Empty for stock and hardened images, which every project may use",
    )
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="images")
    name = models.CharField(max_length=63, validators=[validate_name])
    description = models.CharField(max_length=300, blank=True)
    visibility = models.CharField(max_length=8, choices=Visibility.choices, default=Visibility.PROJECT)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.UPLOAD)
    source_snapshot = models.ForeignKey(
        "snapshots.Snapshot", on_delete=models.SET_NULL, null=True, blank=True, related_name="images"
    )
    source_device = models.CharField(max_length=8, blank=True, help_text="The snapshot disk promoted")
    copied_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="copies"
    )
    declared_format = models.CharField(max_length=8, blank=True, help_text="What the uploader said")
    detected_format = models.CharField(max_length=8, blank=True, help_text="What the header inspection found")
    virtual_size = models.PositiveBigIntegerField(null=True, blank=True)
    upload_bytes = models.PositiveBigIntegerField(default=0, help_text="Bytes received so far")
    stored_bytes = models.PositiveBigIntegerField(null=True, blank=True, help_text="Size of the stored qcow2")
    sha256 = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the stored qcow2 file")
    guest_sha256 = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the guest-visible bytes")
    object_key = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=dict, blank=True, validators=[validate_tags])
    openscap_score = models.FloatField(null=True, blank=True, help_text="Hardened images: OpenSCAP score")
    deprecated_at = models.DateTimeField(null=True, blank=True, help_text="Deprecated from this time on")
    deprecation_note = models.CharField(max_length=300, blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.UPLOADING)
    step = models.CharField(max_length=200, blank=True, help_text="What the operation is doing now")
    last_error = models.TextField(blank=True)
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["name", "region_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "region", "name"],
                condition=Q(project__isnull=False),
                name="image_name_unique_in_project",
            ),
            models.UniqueConstraint(
                fields=["region", "name"],
                condition=Q(project__isnull=True),
                name="platform_image_name_unique",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def owner_label(self) -> str:
        return str(self.project) if self.project_id else "Cloud Digit"

    @property
    def is_deprecated(self) -> bool:
        return self.deprecated_at is not None and self.deprecated_at <= timezone.now()

    @property
    def missing_tags(self) -> list[str]:
        # Stock images are the vendors' own builds: no CIS level is claimed for them.
        wanted = [key for key in CHECKLIST_TAGS if key != "cis-level" or self.slot != self.Slot.STOCK]
        return [key for key in wanted if not self.tags.get(key)]

    @property
    def hint(self) -> str:
        """What to do about a failed upload (the spec's "Custom image won't upload" row)."""
        found = re.search(r"but file has (\w+) signature", self.last_error)
        if self.state != self.State.FAILED or not found:
            return ""
        actual = found.group(1).lower()
        return (
            "Check the file's real format with `qemu-img info --output=json path/to/image` and upload it "
            f"again declaring that format (here: --format {actual}), or "
            "convert it first with `qemu-img convert -O qcow2`."
        )

    @property
    def cis_level(self) -> str:
        return self.tags.get("cis-level", "")

    @property
    def upload_path(self):
        return settings.VAR_DIR / "uploads" / f"{self.id}.upload"


class ImageShare(models.Model):
    """An image shared with one more project of the same account."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="shares")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="shared_images")
    shared_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project__slug"]
        constraints = [models.UniqueConstraint(fields=["image", "project"], name="image_share_unique")]

    def __str__(self) -> str:
        return f"{self.image} shared with {self.project}"


class ImageQuota(RaisedLimit):
    """A raised custom-image limit for a project; the newest row applies."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    limit = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.limit} custom images for {self.project} (ticket {self.ticket})"


class SigningKey(models.Model):
    """A CIS attestor's Ed25519 public key, registered in the console; the private key never is."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="signing_keys")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="signing_keys")
    name = models.CharField(max_length=63)
    public_key = models.CharField(max_length=64, help_text="The raw 32-byte Ed25519 key, base64")
    fingerprint = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the raw key, hex")
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["account__slug", "name"]
        constraints = [models.UniqueConstraint(fields=["account", "name"], name="signing_key_name_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint[:16]})"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class Attestation(models.Model):
    """A signature over an image's SHA-256, its cis-level and the signer."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="attestations")
    key = models.ForeignKey(SigningKey, on_delete=models.PROTECT, related_name="attestations")
    signer = models.CharField(max_length=150)
    image_sha256 = models.CharField(max_length=64)
    cis_level = models.CharField(max_length=16)
    signature = models.CharField(max_length=100, help_text="Ed25519 signature, base64")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.image} signed by {self.signer}"


class ImagePolicy(models.Model):
    """A project's rule for launching VMs from images."""

    class Attestation(models.TextChoices):
        OFF = "off", "Not required"
        AUDIT = "audit", "Audit: record what would be denied"
        ENFORCE = "enforce", "Required: deny VM create without a valid signature"

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="image_policy")
    require_attestation = models.CharField(max_length=8, choices=Attestation.choices, default=Attestation.OFF)
    updated_by = models.CharField(max_length=150)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "image policies"

    def __str__(self) -> str:
        return f"{self.project}: attestation {self.require_attestation}"


class StorageQuota(RaisedLimit):
    """A raised project storage quota (snapshots and custom images, in bytes); the newest row applies."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    limit_bytes = models.PositiveBigIntegerField()

    def __str__(self) -> str:
        return f"{self.limit_bytes / 2**30:g} GiB of storage for {self.project} (ticket {self.ticket})"
