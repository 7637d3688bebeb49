from __future__ import annotations

from django import forms

from clouddigit.console import ConfirmForm
from policies.models import NotificationChannel
from policies.services import MAX_YAML_BYTES

YAML_WIDGET = forms.Textarea(attrs={"rows": 16, "cols": 60, "spellcheck": "false", "autocomplete": "off"})


class ApplyForm(forms.Form):
    """A policy pasted into the textarea or uploaded as a file; `text` is the YAML to apply."""

    # Not stripped: the service's errors name lines, which must be the lines the user wrote.
    yaml = forms.CharField(required=False, strip=False, widget=YAML_WIDGET, label="Policy YAML")
    file = forms.FileField(
        required=False,
        label="or upload a .yaml file",
        widget=forms.FileInput(attrs={"accept": ".yaml,.yml,text/yaml"}),
    )

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data
        text, upload = cleaned.get("yaml") or "", cleaned.get("file")
        if upload and text.strip():
            raise forms.ValidationError("Paste the policy or upload a file, not both.")
        if upload:
            if upload.size > MAX_YAML_BYTES:
                self.add_error("file", f"The file is larger than {MAX_YAML_BYTES // 1024} KiB.")
                return cleaned
            try:
                cleaned["text"] = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                self.add_error("file", f"{upload.name} is not UTF-8 text.")
        elif not text.strip():
            self.add_error("yaml", "Paste the policy's YAML or choose a .yaml file.")
        else:
            cleaned["text"] = text
        return cleaned

    @property
    def source_field(self) -> str:
        """The field the user gave the policy in: where an error in the policy is shown."""
        return "file" if self.files.get("file") else "yaml"


class EditForm(forms.Form):
    yaml = forms.CharField(
        strip=False,
        widget=YAML_WIDGET,
        label="Policy YAML",
        help_text="The name inside decides which policy is changed: a new name applies a new policy.",
    )


class ChannelForm(forms.Form):
    """A notification channel; the service checks the target against the kind."""

    name = forms.CharField(max_length=63, help_text="What a policy's notify_channel says, e.g. slack-ops")
    kind = forms.ChoiceField(choices=NotificationChannel.Kind.choices)
    target = forms.CharField(
        max_length=500,
        help_text="The webhook's http(s) URL at a public address (Slack incoming webhook or compatible), "
        "or email addresses separated by commas",
    )


class DeleteForm(ConfirmForm):
    """What becomes of the policy's snapshots; deleting them asks for the policy's name. Both are
    checked by the service, whose refusal says what to choose or type."""

    snapshots = forms.CharField(required=False)
