from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from clouddigit.audit.log import record
from clouddigit.audit.models import AuditEntry


@receiver(user_logged_in)
def _signed_in(sender, request, user, **kwargs):
    record(actor=user, action="auth.sign-in")


@receiver(user_login_failed)
def _sign_in_refused(sender, credentials, request=None, **kwargs):
    record(
        actor=AnonymousUser(),
        action="auth.sign-in",
        outcome=AuditEntry.Outcome.REFUSED,
        # django-axes marks the request when it refused the attempt without checking the password.
        message="locked out: too many failed sign-ins"
        if getattr(request, "axes_locked_out", False)
        else "wrong username or password",
        detail={"username": credentials.get("username", "")},
    )
