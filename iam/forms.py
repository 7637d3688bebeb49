from __future__ import annotations

from typing import cast

from django import forms

from iam.roles import ROLES


class GrantForm(forms.Form):
    user = forms.CharField(required=False, label="User", help_text="username")
    group = forms.CharField(required=False, label="or group")
    role = forms.ChoiceField(choices=[(name, f"{name} — {role.summary}") for name, role in ROLES.items()])
    where = forms.ChoiceField(label="Where", help_text="a project, or the whole account")

    def __init__(self, *args, account=None, **kwargs):
        super().__init__(*args, **kwargs)
        projects = list(account.projects.order_by("slug")) if account else []
        cast(forms.ChoiceField, self.fields["where"]).choices = [("", f"whole account {account}")] + [
            (str(project.pk), f"project {project}") for project in projects
        ]
        self.fields["where"].required = False
        self.projects = {str(project.pk): project for project in projects}

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if bool(data.get("user")) == bool(data.get("group")):
            raise forms.ValidationError("Name either a user or a group.")
        return data

    @property
    def project(self):
        return self.projects.get(self.cleaned_data.get("where") or "")
