"""The compute inventory: accounts, projects, regions, hosts, VMs and volumes."""

from __future__ import annotations

import re
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user

from clouddigit.compute.flavors import FLAVOR_CHOICES, FLAVORS
from clouddigit.compute.permissions import PERMISSIONS, Perm
from clouddigit.names import shown, validate_name
from clouddigit.operations import Leased
from clouddigit.statemachine import StateMachineMixin

BOOT_DEVICES = ("vda", "sda")
TAG_KEY_RE = re.compile(r"[a-z0-9][a-z0-9._:/-]{0,62}")  # fullmatch: `$` would pass "env\n"
MAX_TAGS = 50


def validate_tags(tags: object) -> None:
    """Tags are a flat {key: value} map; keys are lower-case and safe to use in queries.

    The user's text goes into messages as a parameter, never into the message itself: django-filter
    %-formats every message it reports, so a `%` in a filter value would otherwise be a 500."""
    if not isinstance(tags, dict):
        raise ValidationError("Tags must be a map of key=value pairs.")
    if len(tags) > MAX_TAGS:
        raise ValidationError("At most %(most)d tags are allowed; remove some.", params={"most": MAX_TAGS})
    for key, value in tags.items():
        if not isinstance(key, str) or not TAG_KEY_RE.fullmatch(key) or "__" in key:
            raise ValidationError(
                "Tag key %(key)s is not valid: use lower-case letters, digits and . _ : / - "
                "(up to 63 characters, starting with a letter or digit).",
                params={"key": shown(str(key))},
            )
        if not isinstance(value, str) or len(value) > 255:
            raise ValidationError(
                "Tag %(key)s: the value must be text of at most 255 characters.",
                params={"key": shown(str(key))},
            )
        if any(ord(character) < 32 or ord(character) == 127 for character in value):
            # Never stored (PostgreSQL refuses NUL in JSON) and never shown as something it is not.
            raise ValidationError(
                "Tag %(key)s: the value must not hold control characters (tabs, new lines, NUL).",
                params={"key": shown(str(key))},
            )


def parse_tag(text: str) -> tuple[str, str]:
    """'env=prod' -> ('env', 'prod'); raises ValidationError naming what is wrong."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValidationError(
            "Tag %(text)s must look like key=value, for example env=prod.", params={"text": shown(text)}
        )
    validate_tags({key.strip(): value.strip()})
    return key.strip(), value.strip()


class AccountQuerySet(models.QuerySet):
    def holding(self, user, perm: Perm) -> AccountQuerySet:
        """Accounts on which `user` holds `perm` account-wide (not only in one project)."""
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(pk__in=_granted(user, perm, Account))

    def visible_to(self, user, perm: Perm = Perm.VIEW_INVENTORY) -> AccountQuerySet:
        """Accounts where `user` holds `perm`, account-wide or in one of their projects."""
        return self.filter(
            Q(pk__in=self.holding(user, perm).values("pk"))
            | Q(pk__in=Project.objects.visible_to(user, perm).values("account"))
        )


def _granted(user, perm: Perm, klass):
    """The primary keys of `klass` rows on which `user` holds `perm` (guardian, no global permissions).

    Project and Account share permission codenames; the bare codename makes guardian resolve it against
    `klass`'s content type."""
    codename = Perm(perm).value
    return get_objects_for_user(user, codename, klass=klass, accept_global_perms=False).values("pk")


class Account(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)

    objects = AccountQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]
        permissions = PERMISSIONS

    def __str__(self) -> str:
        return self.slug


class ProjectQuerySet(models.QuerySet):
    def visible_to(self, user, perm: Perm = Perm.VIEW_INVENTORY) -> ProjectQuerySet:
        """Projects where `user` holds `perm`, on the project itself or on its account."""
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(
            Q(pk__in=_granted(user, perm, Project)) | Q(account__in=_granted(user, perm, Account))
        )

    def by_reference(self, reference: str) -> ProjectQuerySet:
        """A project named as its id or as `account/project`."""
        account, sep, slug = reference.partition("/")
        if sep:
            return self.filter(account__slug=account, slug=slug)
        try:
            return self.filter(pk=uuid.UUID(reference))
        except ValueError:
            return self.none()


class Project(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="projects")
    slug = models.SlugField()
    name = models.CharField(max_length=200)

    objects = ProjectQuerySet.as_manager()

    class Meta:
        ordering = ["account__slug", "slug"]
        constraints = [
            models.UniqueConstraint(fields=["account", "slug"], name="project_slug_unique_in_account")
        ]
        permissions = PERMISSIONS

    def __str__(self) -> str:
        return f"{self.account.slug}/{self.slug}"


class Region(models.Model):
    """A region's backends. Rows are kept in step with settings.REGIONS by `sync_regions()`."""

    slug = models.SlugField(primary_key=True)
    name = models.CharField(max_length=100)
    volume_dir = models.CharField(max_length=500)
    s3_endpoint = models.URLField()
    s3_bucket = models.CharField(max_length=63)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def config(self) -> dict:
        """The settings entry, which also holds the S3 keys (secrets stay out of the database)."""
        return settings.REGIONS[self.slug]


class Host(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="hosts")
    name = models.CharField(max_length=100, unique=True)
    libvirt_uri = models.CharField(max_length=500, unique=True)
    cpus = models.PositiveIntegerField(default=0)
    memory_mib = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["region_id", "name"]

    def __str__(self) -> str:
        return self.name


class ProjectScopedQuerySet(models.QuerySet):
    """Rows that belong to a project: seen by whoever holds `perm` (by default the model's
    `view_perm`) on the project or its account."""

    view_perm = Perm.VIEW_INVENTORY

    def visible_to(self, user, perm: Perm | None = None):
        return self.filter(project__in=Project.objects.visible_to(user, perm or self.view_perm).values("pk"))


class TaggedQuerySet(ProjectScopedQuerySet):
    """Rows with a `tags` map (VMs, volumes, snapshots)."""

    def with_tag(self, key: str, value: str) -> TaggedQuerySet:
        validate_tags({key: value})  # also makes the key safe to use in a lookup
        return self.filter(**{f"tags__{key}": value})


class VM(StateMachineMixin, Leased):
    """A VM. Creating one (its boot volume's file made, its domain defined) and deleting one (its domain
    leaves the host, the volumes it does not keep are removed) are long operations: the row carries the
    lease fields of `clouddigit.operations`."""

    class State(models.TextChoices):
        CREATING = "creating", "Creating"
        ERROR = "error", "Error"
        STOPPED = "stopped", "Stopped"
        STARTING = "starting", "Starting"
        RUNNING = "running", "Running"
        STOPPING = "stopping", "Stopping"
        DELETING = "deleting", "Deleting"

    TRANSITIONS = {
        # A create that fails is an error, retried (creating again) or deleted by its owner.
        State.CREATING: {State.STOPPED, State.ERROR},
        State.ERROR: {State.CREATING, State.DELETING},
        State.STARTING: {State.RUNNING, State.STOPPED},
        State.RUNNING: {State.STOPPING},
        State.STOPPING: {State.STOPPED, State.RUNNING},
        # Only a stopped (or never created) VM is deleted; a delete that fails leaves it as it was, to be
        # deleted again.
        State.STOPPED: {State.STARTING, State.DELETING},
        State.DELETING: {State.STOPPED, State.ERROR},
    }

    class GuestAgent(models.TextChoices):
        RUNNING = "running", "Running"
        NOT_RUNNING = "not-running", "Installed, not running"
        NOT_INSTALLED = "not-installed", "Not installed"
        UNKNOWN = "unknown", "Unknown"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="vms")
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="vms")
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="vms")
    name = models.CharField(max_length=63, validators=[validate_name])
    flavor = models.CharField(max_length=32, choices=FLAVOR_CHOICES)
    state = models.CharField(max_length=16, choices=State.choices, default=State.STOPPED)
    vpc = models.CharField("VPC", max_length=63)
    guest_agent = models.CharField(max_length=16, choices=GuestAgent.choices, default=GuestAgent.UNKNOWN)
    guest_agent_checked_at = models.DateTimeField(
        null=True, blank=True, help_text="When a guest freeze last found the agent's status (none: never)"
    )
    tags = models.JSONField(default=dict, blank=True, validators=[validate_tags])
    start_when_created = models.BooleanField(
        default=False, help_text="Start the VM once its creation has finished (asked at create)"
    )
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TaggedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "VM"
        constraints = [models.UniqueConstraint(fields=["project", "region", "name"], name="vm_name_unique")]

    def __str__(self) -> str:
        return self.name

    @property
    def flavor_spec(self):
        return FLAVORS[self.flavor]

    @property
    def in_transition(self) -> bool:
        return self.state in {self.State.CREATING, self.State.STARTING, self.State.STOPPING}


class Layer(models.Model):
    """A sealed, read-only qcow2 file of a volume chain: one snapshot disk's point-in-time data.

    Its id is its stable identity (the file name may be the volume's original one); `parent` is the
    layer it backs onto. Cross-region copies will upload each layer once, keyed by this id.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="layers")
    path = models.CharField(max_length=500, unique=True)
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="children"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"layer {self.id}"


class Volume(StateMachineMixin, Leased):
    """A volume's create, resize, detach and delete are long operations (hypervisor worker):
    `lease_until` and friends say who answers for them (clouddigit/operations.py). A VM's new boot volume
    is created by the VM's operation, a restored volume by its restore."""

    class State(models.TextChoices):
        CREATING = "creating", "Creating"
        AVAILABLE = "available", "Available"
        ATTACHED = "attached", "Attached"
        RESIZING = "resizing", "Resizing"
        DETACHING = "detaching", "Detaching"
        DELETING = "deleting", "Deleting"
        ERROR = "error", "Error"

    TRANSITIONS = {
        State.CREATING: {State.AVAILABLE, State.ATTACHED, State.ERROR},
        State.AVAILABLE: {State.ATTACHED, State.RESIZING, State.DELETING},
        State.ATTACHED: {State.RESIZING, State.DETACHING},
        State.RESIZING: {State.AVAILABLE, State.ATTACHED},
        State.DETACHING: {State.AVAILABLE, State.ATTACHED},
        State.ERROR: {State.CREATING, State.DELETING},
        State.DELETING: {State.AVAILABLE},
    }

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="volumes")
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="volumes")
    name = models.CharField(max_length=63, validators=[validate_name])
    size_bytes = models.PositiveBigIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.AVAILABLE)
    vm = models.ForeignKey(VM, on_delete=models.PROTECT, null=True, blank=True, related_name="volumes")
    device = models.CharField(max_length=8, blank=True, help_text="vda, sda, vdb ... while attached")
    bootable = models.BooleanField(default=False)
    path = models.CharField(max_length=500, help_text="The qcow2 file the volume writes to")
    source_path = models.CharField(
        max_length=500, blank=True, help_text="The image file the volume was copied from (empty: made empty)"
    )
    resize_to_bytes = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="The size a resizing volume grows to"
    )
    backing_layer = models.ForeignKey(
        Layer,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="volumes",
        help_text="The sealed layer the volume's file backs onto (none: the file stands alone)",
    )
    backing_chain = models.JSONField(
        default=list,
        blank=True,
        help_text="The file's qcow2 chain, the active file first, as read when it last changed "
        "(clouddigit.compute.recorded_chain)",
    )
    chain_recorded_at = models.DateTimeField(null=True, blank=True)
    tags = models.JSONField(default=dict, blank=True, validators=[validate_tags])
    last_error = models.TextField(blank=True, help_text="Why the last operation on it did not finish")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TaggedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "region", "name"], name="volume_name_unique"),
            models.UniqueConstraint(
                fields=["vm", "device"], condition=Q(vm__isnull=False), name="volume_device_unique_per_vm"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def size_gib(self) -> float:
        return self.size_bytes / 2**30

    @property
    def in_transition(self) -> bool:
        return self.state in {
            self.State.CREATING,
            self.State.RESIZING,
            self.State.DETACHING,
            self.State.DELETING,
        }

    @property
    def is_boot_disk(self) -> bool:
        """Attached where the VM boots from (vda, or sda on bare metal)."""
        return self.device in BOOT_DEVICES


class RaisedLimit(models.Model):
    """A limit raised by support for a ticket (snapshots per volume, custom images, storage): the
    newest row applies. Each app's row says what it raises."""

    ticket = models.CharField(max_length=100)
    set_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True
        ordering = ["-created_at"]
