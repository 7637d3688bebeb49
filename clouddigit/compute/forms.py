"""Console forms for VMs and volumes; `TagsField` is the one way a console form takes tags."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from clouddigit.compute.models import parse_tag
from clouddigit.compute.services import VolumeFate, default_fate


class TagsField(forms.CharField):
    """Tags typed one `key=value` per line, cleaned to a {key: value} map (each line checked by
    `parse_tag`, so the console says what the API and the CLI say)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", False)
        kwargs.setdefault("label", "Tags, one key=value per line")
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3, "cols": 40, "spellcheck": "false"}))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, dict):
            return "\n".join(f"{key}={text}" for key, text in sorted(value.items()))
        return value

    def to_python(self, value) -> dict:
        tags: dict[str, str] = {}
        for line in (super().to_python(value) or "").splitlines():
            if not line.strip():
                continue
            key, text = parse_tag(line.strip())
            if key in tags:
                raise ValidationError("Tag %(key)r is given twice; keep one line.", params={"key": key})
            tags[key] = text
        return tags


class TagsForm(forms.Form):
    tags = TagsField(help_text="replaces the tags; a VM's tags decide which snapshot policies cover it")


class DeleteVMForm(forms.Form):
    """What happens to each attached volume (a radio per volume, named `volume-<id>`), and the VM's
    name typed to confirm (services.delete_vm checks it)."""

    confirm = forms.CharField(required=False, label="Type the name to confirm")

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
