"""One rule for the names of VMs, volumes, snapshots and images, with one message everywhere.

A name appears in URLs, CLI tables that `awk` splits on whitespace, libvirt domain names on the host and
file names of exports, so it is plain ASCII: letters, digits, `-`, `_` and `.`, 1-63 characters, starting
with a letter or digit (a leading `-` reads as an option on a command line, a leading `.` as a hidden
file). Models, forms and serializers use `validate_name`; services use `check_name`, which raises the
API's error with the same text.
"""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError

from clouddigit.errors import InvalidRequest

MAX_LENGTH = 63
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
RULE = "use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"
# Enough of a wrong name to recognise it; a 10,000-character name is not echoed whole.
_SHOWN = 40


def shown(name: str) -> str:
    """The name as a message quotes it: cut short (saying how long it was) when it is long."""
    if len(name) <= _SHOWN:
        return repr(name)
    return f"{name[:_SHOWN]!r}… ({len(name)} characters)"


def problem(name: object) -> str:
    """The message for a name that breaks the rule; empty when it is a good name."""
    if isinstance(name, str) and NAME_RE.fullmatch(name):
        return ""
    text = name if isinstance(name, str) else str(name)
    return f"{shown(text)} is not a valid name: {RULE}."


def validate_name(value: object) -> None:
    """The Django validator (model fields, forms, DRF serializers)."""
    message = problem(value)
    if message:
        # The user's text goes in as a parameter, never into the message: django-filter and DRF
        # %-format messages, and a `%` in a name would otherwise be a 500.
        raise ValidationError("%(message)s", code="invalid_name", params={"message": message})


def check_name(name: str, field: str = "name") -> str:
    """The name without surrounding spaces, once valid; else an InvalidRequest naming `field`."""
    name = (name or "").strip()
    message = problem(name)
    if message:
        raise InvalidRequest(message, field=field)
    return name


def derived_name(name: str, suffix: str) -> str:
    """`db-01` + `-boot`: a resource named after another, cut to fit the limit."""
    return f"{name[: MAX_LENGTH - len(suffix)]}{suffix}"


class NameField(forms.CharField):
    """A form field for a name: the rule's message, not Django's length message, for a long name."""

    default_validators = [validate_name]

    def __init__(self, **kwargs):
        kwargs.setdefault("widget", forms.TextInput(attrs={"maxlength": MAX_LENGTH, "spellcheck": "false"}))
        super().__init__(**kwargs)
