"""Telling a policy's `notify_channel` when a slot went wrong: runs skipped, throttled, failed or missed,
and retention errors. At most one message per policy, slot and kind (runs | retention).

The scheduler calls these after it has decided runs. The row is inserted before anything is sent, and the
database's unique constraint lets one tick insert it, so two ticks racing for a slot send it once; the
inserter sends, then records how it went. A sender that dies between the two leaves the row without an
outcome: the message may or may not have gone, and is not sent again (at most once, never twice).

Nothing here raises into the scheduler for a channel that is down, refuses or answers an error: that is
recorded on the row, for the policy's page.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from clouddigit import outbound
from policies.models import Notification, NotificationChannel, Policy, SlotRun
from policies.schedule import slots_between
from policies.spec import PolicySpec, Slot

logger = logging.getLogger(__name__)

PROBLEMS = (
    SlotRun.Outcome.SKIPPED,
    SlotRun.Outcome.THROTTLED,
    SlotRun.Outcome.FAILED,
    SlotRun.Outcome.MISSED,
)
MAX_VMS_LISTED = 10
TIMEOUT_SECONDS = 5


def coverage_url(policy: Policy) -> str:
    return f"{settings.PUBLIC_URL}{reverse('policies:detail', args=[policy.pk])}#coverage"


def notify_runs(policy: Policy, runs: list[SlotRun], now: datetime) -> list[Notification]:
    """Notify every slot of `policy` that is complete at `now` and has a run that did not create a
    snapshot. Call it once per policy and tick, after the tick's runs are decided and saved, with the
    Policy as the tick loaded it (its scanned_until still the previous tick's).

    A slot's runs start over the spread window (POLICY_SPREAD_MINUTES), a few in each tick, so a slot is
    reported once that window has passed, with all its runs: the slots of `runs` that are complete, and
    the slots whose window closed since the previous tick (their runs were decided by earlier ticks).
    Returns the notifications this call inserted (sent or not)."""
    spec = policy.parsed
    if not spec.notify_channel:
        return []
    window = timedelta(minutes=settings.POLICY_SPREAD_MINUTES)
    complete_until = now - window
    previous = policy.scanned_until or policy.created_at
    slots = {at for at, _ in slots_between(spec, previous - window, complete_until)}
    slots |= {run.slot_at for run in runs if run.slot_at <= complete_until}
    if not slots:
        return []
    counts: dict[datetime, Counter] = defaultdict(Counter)
    for slot_at, outcome, count in (
        SlotRun.objects.filter(policy=policy, slot_at__in=slots)
        .values_list("slot_at", "outcome")
        .annotate(count=Count("pk"))
        .order_by()
    ):
        counts[slot_at][outcome] += count
    sent = []
    for slot_at in sorted(counts):
        if not any(counts[slot_at][outcome] for outcome in PROBLEMS):
            continue
        text = _runs_text(policy, spec, slot_at, counts[slot_at])
        notification = _notify(policy, spec, slot_at, Notification.Kind.RUNS, text, now)
        if notification is not None:
            sent.append(notification)
    return sent


def notify_retention_error(policy: Policy, slot_at: datetime, message: str) -> Notification | None:
    """Notify that retention could not delete the snapshot of `slot_at`, once per policy and slot.
    Returns the notification if this call inserted it."""
    spec = policy.parsed
    if not spec.notify_channel:
        return None
    text = (
        f"Snapshot policy {policy.name} ({policy.project}): retention error for the slot of "
        f"{_when(spec, slot_at)}.\n{message}\nCoverage: {coverage_url(policy)}"
    )
    return _notify(policy, spec, slot_at, Notification.Kind.RETENTION, text, timezone.now())


def _slot_of(spec: PolicySpec, slot_at: datetime) -> Slot | None:
    """The schedule entry a slot came from (for its time zone): the one whose local time it is."""
    slots = [slot for slot in (spec.daily, spec.weekly) if slot is not None]
    for slot in slots:
        if slot_at.astimezone(ZoneInfo(slot.tz_name)).time() == slot.at:
            return slot
    return slots[0] if slots else None


def _when(spec: PolicySpec, slot_at: datetime) -> str:
    utc = f"{slot_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    slot = _slot_of(spec, slot_at)
    if slot is None or slot.zone == "UTC":
        return utc
    return f"{slot_at.astimezone(ZoneInfo(slot.tz_name)):%Y-%m-%d %H:%M} {slot.zone} ({utc})"


def _runs_text(policy: Policy, spec: PolicySpec, slot_at: datetime, counts: Counter) -> str:
    total = sum(counts.values())
    failing = sum(counts[outcome] for outcome in PROBLEMS)
    tally = ", ".join(
        f"{counts[outcome]} {label.lower()}" for outcome, label in SlotRun.Outcome.choices if counts[outcome]
    )
    examples = (
        SlotRun.objects.filter(policy=policy, slot_at=slot_at, outcome__in=PROBLEMS)
        .select_related("vm")
        .order_by("vm__name", "klass")[:MAX_VMS_LISTED]
    )
    lines = [
        f"Snapshot policy {policy.name} ({policy.project}): {failing} of {total} VMs got no snapshot "
        f"at the slot of {_when(spec, slot_at)}. Runs: {tally}."
    ]
    lines += [
        f"• {run.vm.name} ({run.klass}): {run.outcome}: {run.reason or 'no reason given'}" for run in examples
    ]
    if failing > MAX_VMS_LISTED:
        lines.append(f"… and {failing - MAX_VMS_LISTED} more.")
    lines.append(f"Coverage: {coverage_url(policy)}")
    return "\n".join(lines)


def _notify(
    policy: Policy, spec: PolicySpec, slot_at: datetime, kind: str, text: str, now: datetime
) -> Notification | None:
    channel = NotificationChannel.objects.filter(project=policy.project_id, name=spec.notify_channel).first()
    missing = "" if channel else f"no channel named {spec.notify_channel} in project {policy.project}"
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                policy=policy,
                slot_at=slot_at,
                kind=kind,
                channel=channel,
                channel_name=spec.notify_channel,
                message=text,
                created_at=now,
                sent_at=now if missing else None,
                ok=False if missing else None,
                error=missing,
            )
    except IntegrityError:
        return None  # another tick has this slot: it sends
    if channel is None:
        return notification
    error = _deliver(channel, text)
    notification.sent_at, notification.ok, notification.error = timezone.now(), not error, error
    Notification.objects.filter(pk=notification.pk).update(
        sent_at=notification.sent_at, ok=notification.ok, error=error
    )
    if error:
        logger.warning("notification %s to %s failed: %s", notification.pk, channel, error)
    return notification


def _deliver(channel: NotificationChannel, text: str) -> str:
    """Send `text`; the error as the console shows it, or "" once it is delivered."""
    try:
        if channel.kind == NotificationChannel.Kind.EMAIL:
            subject = text.splitlines()[0][:200]
            send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, channel.recipients)
            return ""
        return _post(channel, text)
    except Exception as error:  # a bug or an odd failure here must not stop the scheduler
        logger.exception("notification to %s", channel)
        return f"{type(error).__name__}: {error}"[:1000]


def _post(channel: NotificationChannel, text: str) -> str:
    body = json.dumps({"text": text}).encode()
    # Neither the response body nor the URL in what is recorded: a webhook URL's path is its secret.
    host = urlsplit(channel.target).netloc.rpartition("@")[2]
    try:
        answer = outbound.post(
            channel.target, body=body, headers=signed_headers(channel.secret, body), timeout=TIMEOUT_SECONDS
        )
    except outbound.Refused as error:
        return f"refused to post to {host}: {error}"
    except outbound.OutboundError as error:
        return str(error)
    if 200 <= answer.status < 300:
        return ""
    if 300 <= answer.status < 400:
        # Not followed: a redirect could lead anywhere, past the address check, and a POST redirected
        # becomes a GET that delivers nothing.
        location = answer.location[:300] or "?"
        return (
            f"{host} answered HTTP {answer.status} {answer.reason}, a redirect to {location}, "
            "which is not followed: add a channel with the final URL"
        )
    return f"{host} answered HTTP {answer.status} {answer.reason}".strip()


def signed_headers(secret: str, body: bytes) -> dict[str, str]:
    """The receiver checks that X-CloudDigit-Signature is the HMAC-SHA256, keyed with the channel's
    secret, of "<X-CloudDigit-Timestamp>.<body>", and that the timestamp is recent (no replays)."""
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": "CloudDigit-Notifications",
        "X-CloudDigit-Timestamp": timestamp,
        "X-CloudDigit-Signature": f"sha256={digest}",
    }
