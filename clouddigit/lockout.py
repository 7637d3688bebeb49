"""Password guessing: django-axes counts failed sign-ins per (username, address) and, past
AXES_FAILURE_LIMIT, refuses that pair until AXES_COOLOFF_TIME after its last failure. This module is
what the user sees then (the sign-in page or the API's error shape, both saying when to try again),
and the lock-out's entry in our audit log."""

from __future__ import annotations

from datetime import datetime

from axes.helpers import get_client_username, get_cool_off
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import AnonymousUser
from django.dispatch import receiver
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone

from clouddigit.audit.log import Target, record
from clouddigit.audit.models import AuditEntry


def locked_until(username: str | None, ip_address: str | None) -> datetime:
    """When the lock-out of this username from this address ends: its last failure plus the cool-off."""
    last = (
        AccessAttempt.objects.filter(username=username, ip_address=ip_address)
        .order_by("-attempt_time")
        .values_list("attempt_time", flat=True)
        .first()
    )
    return (last or timezone.now()) + get_cool_off()


def lockout_message(username: str | None, until: datetime) -> str:
    minutes = max(1, round((until - timezone.now()).total_seconds() / 60))
    return (
        f"Too many failed sign-ins for {username or 'this username'} from your address. "
        f"Try again after {until:%H:%M} UTC (in {minutes} minute{'s' if minutes != 1 else ''}), "
        "or ask an administrator to unlock it."
    )


def lockout_response(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: the answer to any sign-in attempt while its (username, address) is locked."""
    username = get_client_username(request, credentials)
    until = locked_until(username, request.axes_ip_address)
    message = lockout_message(username, until)
    retry_after = str(max(1, int((until - timezone.now()).total_seconds())))
    response: HttpResponse
    if request.path_info.startswith("/api/"):
        response = JsonResponse({"code": "TooManySignInAttempts", "message": message}, status=429)
    else:
        form = AuthenticationForm(request, initial={"username": username})
        response = render(
            request, "registration/login.html", {"form": form, "locked_out": message}, status=429
        )
    response["Retry-After"] = retry_after
    return response


@receiver(user_locked_out)
def _audit_lockout(sender, request, username, ip_address, **kwargs):
    """One entry when a lock-out starts. Axes signals again on every attempt during the lock-out; those
    attempts are audited as refused sign-ins (clouddigit/audit/signals.py)."""
    if request.axes_failures_since_start is None:  # an attempt during the lock-out: counted nothing
        return
    until = locked_until(username, ip_address)
    record(
        actor=AnonymousUser(),
        action="auth.lockout",
        outcome=AuditEntry.Outcome.REFUSED,
        target=Target(type="user", name=username or ""),
        message=lockout_message(username, until),
        detail={"failures": request.axes_failures_since_start, "until": until.isoformat()},
    )
