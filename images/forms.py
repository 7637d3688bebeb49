"""Console forms for images. They check shapes only; the services decide (names, formats, permissions)."""

from __future__ import annotations

from typing import cast

from django import forms

from clouddigit.compute.flavors import FLAVOR_CHOICES
from clouddigit.compute.forms import TagsField
from clouddigit.compute.models import Region
from clouddigit.names import NameField
from images.inspection import FORMATS
from images.models import Image

GiB = 2**30


def region_choices() -> list[tuple[str, str]]:
    return [(region.slug, f"{region.slug} ({region.name})") for region in Region.objects.all()]


class RegionChoiceField(forms.ChoiceField):
    """Regions are rows kept in step with settings; their choices are read when the form is built."""

    def __init__(self, **kwargs):
        super().__init__(choices=region_choices, **kwargs)


class UploadForm(forms.Form):
    """An import: the fields `services.start_import` takes. With JavaScript the file itself is PUT
    separately (the browser sends `size_bytes`); without, it comes with this form as a multipart field."""

    project = forms.CharField(widget=forms.HiddenInput)
    region = RegionChoiceField()
    name = NameField()
    format = forms.ChoiceField(
        choices=[(name, name) for name in FORMATS],
        help_text="what the file is; its header is checked against this before anything opens it",
    )
    description = forms.CharField(max_length=300, required=False)
    os_family = forms.CharField(max_length=255, required=False, label="os-family", help_text="e.g. ubuntu")
    cis_level = forms.CharField(max_length=16, required=False, label="cis-level", help_text="e.g. 1 or 2")
    owner = forms.CharField(max_length=255, required=False, label="owner", help_text="default: you")
    file = forms.FileField(required=False, label="Image file", widget=forms.FileInput())
    size_bytes = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data
        if not cleaned.get("file") and cleaned.get("size_bytes") is None:
            self.add_error("file", "Choose the image file to upload.")
        return cleaned

    @property
    def tags(self) -> dict:
        fields = {"os-family": "os_family", "cis-level": "cis_level", "owner": "owner"}
        return {
            key: self.cleaned_data[name].strip() for key, name in fields.items() if self.cleaned_data[name]
        }


class TagsForm(forms.Form):
    tags = TagsField(help_text="replaces the tags; created-at is kept (the platform sets it)")

    @staticmethod
    def text_of(tags: dict) -> str:
        return "\n".join(f"{key}={value}" for key, value in sorted(tags.items()) if key != "created-at")


class VisibilityForm(forms.Form):
    visibility = forms.ChoiceField(choices=Image.Visibility.choices)


class ShareForm(forms.Form):
    project = forms.CharField(
        max_length=120,
        label="Project (account/project)",
        widget=forms.TextInput(attrs={"placeholder": "acme/sandbox"}),
    )


class DeprecateForm(forms.Form):
    at = forms.DateTimeField(
        required=False,
        label="From (UTC)",
        help_text="empty: now",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    note = forms.CharField(max_length=300, required=False, help_text="e.g. use ubuntu-24.04-cis instead")


class CopyForm(forms.Form):
    region = RegionChoiceField(label="To region")
    project = forms.CharField(
        max_length=130,
        required=False,
        label="To project (account/project)",
        help_text="empty: this image's project; another project of the same account",
    )
    name = NameField(required=False, help_text="empty: the same name")


class PromoteForm(forms.Form):
    name = NameField(label="Image name")
    device = forms.ChoiceField(required=False, label="Disk")
    description = forms.CharField(max_length=300, required=False)

    def __init__(self, *args, disks=(), **kwargs):
        super().__init__(*args, **kwargs)
        disks = list(disks)
        if len(disks) > 1:
            device = cast(forms.ChoiceField, self.fields["device"])
            device.choices = [("", "— all disks (refused: pick one) —")] + [
                (disk.device, f"{disk.device} · {disk.volume_name}{' (boot)' if disk.bootable else ''}")
                for disk in disks
            ]
            boot = next((disk for disk in disks if disk.bootable), disks[0])
            self.fields["device"].initial = boot.device
        else:
            del self.fields["device"]


class LimitForm(forms.Form):
    project = forms.CharField(widget=forms.HiddenInput)
    limit = forms.IntegerField(min_value=1, max_value=10_000, label="New limit")
    ticket = forms.CharField(max_length=100, label="Ticket reference")


class LaunchForm(forms.Form):
    """A VM from an image: what `launch.launch_vm` takes. `image` is an id or a name."""

    project = forms.CharField(widget=forms.HiddenInput)
    region = RegionChoiceField()
    name = NameField(label="VM name")
    flavor = forms.ChoiceField(choices=FLAVOR_CHOICES, initial="std-2x4")
    vpc = forms.CharField(max_length=63, label="VPC")
    boot_gib = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=16_384,
        label="Boot volume (GiB)",
        help_text="empty: the image's size",
    )
    image = forms.CharField(max_length=63)
    show_deprecated = forms.BooleanField(required=False, label="Show deprecated")
    tags = TagsField(help_text="e.g. env=prod: snapshot policies pick VMs by tag (scope.vm_tags)")
    start = forms.BooleanField(required=False, initial=True, label="Start now")

    @property
    def boot_size_bytes(self) -> int | None:
        gib = self.cleaned_data.get("boot_gib")
        return gib * GiB if gib else None
