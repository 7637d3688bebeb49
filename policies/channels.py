"""Notification channels: where a policy's `notify_channel` sends (a Slack-compatible webhook or email).

Every write goes through these services, whatever calls them (console today), and is audited. A webhook
must lead to a public address (clouddigit/outbound.py; sending checks again) and gets a signing secret,
which the caller shows its user once.
"""

from __future__ import annotations

import secrets

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction

from clouddigit import outbound
from clouddigit.access import actor_name, require
from clouddigit.audit.log import audited
from clouddigit.compute.models import Project
from clouddigit.compute.permissions import Perm
from clouddigit.errors import Conflict, InvalidRequest
from policies.models import NotificationChannel
from policies.spec import NAME_RE

MAX_RECIPIENTS = 10
PUBLIC_ONLY = (
    "Webhooks go to public addresses only: use a public https:// URL, or ask your Cloud Digit operator "
    "to allowlist the network of an on-premises receiver."
)


def new_secret() -> str:
    return secrets.token_hex(32)


def _checked_target(kind: str, target: str) -> str:
    target = target.strip()
    limit = NotificationChannel._meta.get_field("target").max_length
    assert limit is not None
    if len(target) > limit:
        raise InvalidRequest(f"target: is longer than {limit} characters.", field="target")
    if kind == NotificationChannel.Kind.WEBHOOK:
        try:
            outbound.parse(target)
        except outbound.Refused as error:
            raise InvalidRequest(f"target: {error}.", field="target") from None
        try:
            outbound.check(target)
        except outbound.Refused as error:
            raise InvalidRequest(f"target: {error}. {PUBLIC_ONLY}", field="target") from None
        except outbound.OutboundError as error:
            raise InvalidRequest(f"target: {error}; check the URL's host name.", field="target") from None
        return target
    addresses = [address.strip() for address in target.split(",") if address.strip()]
    if not addresses or len(addresses) > MAX_RECIPIENTS:
        raise InvalidRequest(
            f"target: an email channel needs 1 to {MAX_RECIPIENTS} addresses separated by commas.",
            field="target",
        )
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise InvalidRequest(f"target: {address!r} is not an email address.", field="target") from None
    return ", ".join(addresses)


@audited("policy.channel.create", secret=("target",))
def create_channel(*, actor, project: Project, name: str, kind: str, target: str) -> NotificationChannel:
    require(actor, Perm.MANAGE_POLICIES, project, "add notification channels")
    name = name.strip()
    if not NAME_RE.match(name):
        raise InvalidRequest(
            f"name: use lower-case letters, digits and '-' (up to 63), e.g. slack-ops, not {name!r}.",
            field="name",
        )
    if kind not in NotificationChannel.Kind.values:
        raise InvalidRequest(
            f"kind: must be {' or '.join(NotificationChannel.Kind.values)}, not {kind!r}.", field="kind"
        )
    channel = NotificationChannel(
        project=project,
        name=name,
        kind=kind,
        target=_checked_target(kind, target),
        secret=new_secret() if kind == NotificationChannel.Kind.WEBHOOK else "",
        created_by=actor_name(actor),
    )
    try:
        with transaction.atomic():
            channel.save(force_insert=True)
    except IntegrityError:
        raise Conflict(f"name: {project} already has a channel named {name}.", field="name") from None
    return channel


@audited("policy.channel.rotate-secret", target="channel")
def rotate_secret(*, actor, channel: NotificationChannel) -> NotificationChannel:
    """A new signing secret; the old one stops working at once (receivers must change theirs)."""
    require(actor, Perm.MANAGE_POLICIES, channel.project, "change notification channels")
    if channel.kind != NotificationChannel.Kind.WEBHOOK:
        raise InvalidRequest(f"{channel.name} is an email channel: only webhooks are signed.")
    channel.secret = new_secret()
    channel.save(update_fields=["secret"])
    return channel


@audited("policy.channel.delete", target="channel")
def delete_channel(*, actor, channel: NotificationChannel) -> None:
    """Policies naming it keep their notify_channel; their next notification records it as missing."""
    require(actor, Perm.MANAGE_POLICIES, channel.project, "delete notification channels")
    channel.delete()
