"""Console forms for VMs and volumes. They only parse what was typed: the services check names, sizes,
devices and states, so the console, the API and the CLI refuse with the same words. `TagsField` is the one
way a console form takes tags."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from clouddigit.compute.models import parse_tag
from clouddigit.compute.services import VolumeFate, default_fate
from clouddigit.console import ConfirmForm
from clouddigit.names import NameField


class TagsField(forms.Field):
    """Tags typed one `key=value` per line, cleaned to a {key: value} map (each line checked by
    `parse_tag`, so the console says what the API and the CLI say)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", "Tags, one key=value per line")
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3, "cols": 40, "spellcheck": "false"}))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, dict):
            return "\n".join(f"{key}={text}" for key, text in sorted(value.items()))
        return value

    def to_python(self, value) -> dict:
        tags: dict[str, str] = {}
        for line in str(value or "").splitlines():
            if not line.strip():
                continue
            key, text = parse_tag(line.strip())
            if key in tags:
                raise ValidationError("Tag %(key)r is given twice; keep one line.", params={"key": key})
            tags[key] = text
        return tags


class TagsForm(forms.Form):
    tags = TagsField(help_text="replaces the tags; a VM's tags decide which snapshot policies cover it")


class DeleteVMForm(ConfirmForm):
    """What happens to each attached volume (a radio per volume, named `volume-<id>`), and the VM's
    name typed to confirm (services.delete_vm checks it)."""

    def __init__(self, *args, volumes, **kwargs):
        super().__init__(*args, **kwargs)
        self.volumes = list(volumes)
        for volume in self.volumes:
            self.fields[f"volume-{volume.pk}"] = forms.ChoiceField(
                choices=VolumeFate.choices,
                initial=default_fate(volume),
                widget=forms.RadioSelect,
                label=f"{volume.device} {volume.name}" + (" (boot)" if volume.bootable else ""),
            )

    def fates(self) -> dict[str, str]:
        return {str(volume.pk): self.cleaned_data[f"volume-{volume.pk}"] for volume in self.volumes}

    def volume_fields(self):
        return [self[f"volume-{volume.pk}"] for volume in self.volumes]


class VolumeCreateForm(forms.Form):
    name = NameField(label="Name")
    size_gib = forms.IntegerField(label="Size (GiB)")


class AttachForm(forms.Form):
    ROLES = [("secondary", "Secondary disk (vdb, vdc …)"), ("boot", "Boot disk (vda, or sda on bare metal)")]

    # Any value passes the form: the service answers a VM the volume cannot attach to (404).
    vm = forms.CharField(label="VM", widget=forms.Select)
    role = forms.ChoiceField(
        choices=ROLES, initial="secondary", required=False, widget=forms.RadioSelect, label="Attach as"
    )
    device = forms.CharField(
        required=False, label="Device", help_text="for a secondary disk; empty: the next free one"
    )

    def __init__(self, *args, vms=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["vm"].widget.choices = [("", "— choose a VM —"), *((str(vm.pk), vm.name) for vm in vms)]


class ResizeForm(forms.Form):
    size_gib = forms.IntegerField(label="New size (GiB)")


class DeleteVolumeForm(ConfirmForm):
    CHOICES = [
        ("keep", "Keep them: they still restore to new volumes (as EBS does)"),
        ("delete", "Delete them with the volume"),
    ]

    snapshots = forms.ChoiceField(
        choices=CHOICES, required=False, widget=forms.RadioSelect, label="Its snapshots"
    )
