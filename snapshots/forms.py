from __future__ import annotations

from django import forms

from clouddigit.names import NameField
from snapshots.models import Snapshot


class CreateForm(forms.Form):
    name = NameField(required=False, help_text="optional; defaults to a timestamped name")
    consistency = forms.ChoiceField(
        choices=Snapshot.Consistency.choices,
        initial=Snapshot.Consistency.APPLICATION,
        required=False,
        help_text="application-consistent freezes the guest through qemu-guest-agent first",
    )


class RestoreVolumeForm(forms.Form):
    name = NameField(label="New volume name")
    # Any value passes the form: the service names the disks there are when it is not one of them.
    disk = forms.CharField(required=False, label="Disk", widget=forms.Select)

    def __init__(self, *args, disks=(), **kwargs):
        super().__init__(*args, **kwargs)
        disks = list(disks)
        if len(disks) > 1:
            self.fields["disk"].widget.choices = [
                (disk.device or str(disk.pk), f"{disk.device or '-'} · {disk.volume_name}") for disk in disks
            ]
        else:
            self.fields["disk"].widget = forms.HiddenInput()


class RestoreVMForm(forms.Form):
    name = NameField(label="New VM name")
    vpc = forms.CharField(max_length=63, label="VPC")
    flavor = forms.CharField(max_length=32, required=False, help_text="empty: the snapshot's flavor")
    keep_tags = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Tags to keep from the source VM"
    )
    acknowledge_warnings = forms.BooleanField(
        required=False, label="I have read the warnings; restore anyway"
    )

    def __init__(self, *args, tags: dict, scoped: dict[str, str], **kwargs):
        """`tags`: the source VM's; `scoped`: {key: why} for those that would put the new VM under a
        policy, which start unticked (services.tag_choices)."""
        kwargs.setdefault("initial", {})
        kwargs["initial"].setdefault("keep_tags", [key for key in tags if key not in scoped])
        super().__init__(*args, **kwargs)
        field = self.fields["keep_tags"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = [(key, f"{key}={value}") for key, value in tags.items()]
        field.help_text = " ".join(
            f"{key}={tags[key]} is not kept by default: {why}." for key, why in scoped.items()
        )
        if not tags:
            del self.fields["keep_tags"]


class CopyForm(forms.Form):
    # Any value passes the form: the service names the regions there are when it is not one of them.
    target_region = forms.CharField(label="Target region", widget=forms.Select)
    name = NameField(required=False, help_text="optional; defaults to the snapshot's name")

    def __init__(self, *args, regions=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target_region"].widget.choices = [(slug, slug) for slug in regions]


class TagForm(forms.Form):
    add = forms.CharField(required=False, label="Add tag (key=value)")
    remove = forms.CharField(required=False, label="Remove tag (key)")


class LimitForm(forms.Form):
    limit = forms.IntegerField(min_value=1, max_value=10_000, label="New limit")
    ticket = forms.CharField(max_length=100, label="Ticket reference")
