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


class RestoreVMForm(forms.Form):
    name = NameField(label="New VM name")
    vpc = forms.CharField(max_length=63, label="VPC")
    flavor = forms.CharField(max_length=32, required=False, help_text="empty: the snapshot's flavor")
    acknowledge_warnings = forms.BooleanField(
        required=False, label="I have read the warnings; restore anyway"
    )


class TagForm(forms.Form):
    add = forms.CharField(required=False, label="Add tag (key=value)")
    remove = forms.CharField(required=False, label="Remove tag (key)")


class LimitForm(forms.Form):
    limit = forms.IntegerField(min_value=1, max_value=10_000, label="New limit")
    ticket = forms.CharField(max_length=100, label="Ticket reference")
