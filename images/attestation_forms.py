"""Console forms for CIS attestation: register a signing key, paste a signature, set the image policy.
They only shape input; images.attestation decides what is allowed."""

from __future__ import annotations

from typing import cast

from django import forms

from images.models import ImagePolicy, SigningKey


class RegisterKeyForm(forms.Form):
    account = forms.ChoiceField(label="Account")
    name = forms.CharField(max_length=63, label="Key name", help_text="e.g. dana-laptop")
    public_key = forms.CharField(
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 64, "spellcheck": "false", "autocomplete": "off"}),
        label="Public key",
        help_text="Ed25519: the raw 32-byte key in base64, or a PEM block starting with "
        "-----BEGIN PUBLIC KEY-----. Never paste the private key.",
    )

    def __init__(self, *args, accounts: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["account"]).choices = [(slug, slug) for slug in accounts]


class AttestForm(forms.Form):
    key = forms.ModelChoiceField(
        queryset=SigningKey.objects.none(), label="Your signing key", empty_label=None
    )
    signature = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 64, "spellcheck": "false", "autocomplete": "off"}),
        label="Signature (base64)",
    )

    def __init__(self, *args, keys, **kwargs):
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["key"]).queryset = keys


class PolicyForm(forms.Form):
    # The project the form was shown for: a project switch in another tab cannot move the change.
    project = forms.CharField(widget=forms.HiddenInput)
    attestation = forms.ChoiceField(
        choices=ImagePolicy.Attestation.choices, widget=forms.RadioSelect, label="Require CIS attestation"
    )
