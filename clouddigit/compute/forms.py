"""Console forms of the volume lifecycle. They only parse what was typed: the services check sizes,
devices and states, so the console, the API and the CLI refuse with the same words."""

from __future__ import annotations

from django import forms

from clouddigit.console import ConfirmForm


class VolumeCreateForm(forms.Form):
    name = forms.CharField(label="Name")
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
