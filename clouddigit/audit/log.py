"""Writing the audit log. Services are wrapped with @audited; other places call record() directly.

A success is written in the same transaction as the change it describes. A refusal or failure is written
after the operation's transaction has rolled back, so it is kept although nothing else is.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from django.db import models, transaction

from clouddigit.access import actor_name
from clouddigit.audit.context import source_ip
from clouddigit.audit.models import AuditEntry
from clouddigit.compute.models import Account, Project
from clouddigit.errors import ServiceError


@dataclass(frozen=True)
class Target:
    """What an entry is about, captured when known (a deleted object has no primary key afterwards)."""

    type: str = ""
    id: str = ""
    name: str = ""
    account: Account | None = None
    project: Project | None = None

    @classmethod
    def of(cls, obj) -> Target:
        """From the object acted on, or from the project/account a refused create was aimed at."""
        if obj is None:
            return cls()
        account, project = _scope_of(obj)
        if not isinstance(obj, models.Model):
            return cls(name=str(obj)[:300], account=account, project=project)
        return cls(obj._meta.model_name or "", str(obj.pk), str(obj)[:300], account, project)


def _scope_of(obj) -> tuple[Account | None, Project | None]:
    if isinstance(obj, Account):
        return obj, None
    if isinstance(obj, Project):
        return obj.account, obj
    project = getattr(obj, "project", None)
    if isinstance(project, Project):
        return project.account, project
    account = getattr(obj, "account", None)
    return (account if isinstance(account, Account) else None), None


def _plain(value):
    """A JSON-friendly rendering of a service argument for the entry's detail, storable whatever the
    user typed: PostgreSQL refuses a NUL character in text and JSON, so it is written out as `\\x00`."""
    if isinstance(value, str):
        return _storable(value)
    if isinstance(value, dict):
        return {_storable(str(key)): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return _storable(str(value))


def _storable(text: str) -> str:
    return text.replace("\x00", "\\x00")


def record(
    *,
    actor,
    action: str,
    outcome: str = AuditEntry.Outcome.SUCCESS,
    target: Target | None = None,
    message: str = "",
    detail: dict | None = None,
) -> AuditEntry:
    target = target or Target()
    authenticated = actor is not None and actor.is_authenticated
    return AuditEntry.objects.create(
        actor_id=actor.pk if authenticated else None,
        actor_name=actor_name(actor),
        action=action,
        outcome=outcome,
        target_type=target.type,
        target_id=target.id,
        target_name=_storable(target.name),
        account=target.account,
        project=target.project,
        source_ip=source_ip.get(),
        message=_storable(message),
        detail=_plain(detail or {}),
    )


def _first_model(kwargs: dict):
    return next((value for value in kwargs.values() if isinstance(value, models.Model)), None)


def audited(action: str, *, target: str | None = None, secret: tuple[str, ...] = ()):
    """Run the service atomically and log it. `target` names the keyword argument acted on; without
    it, the returned object is the target (creates). `secret` names arguments whose values must not be
    written to the log (a webhook URL carries its token)."""

    def decorate(service):
        @functools.wraps(service)
        def wrapper(*, actor, **kwargs):
            subject = Target.of(kwargs[target]) if target else None
            detail = {
                key: "[not logged]" if key in secret else value
                for key, value in kwargs.items()
                if key != target
            }
            try:
                with transaction.atomic():
                    result = service(actor=actor, **kwargs)
                    record(actor=actor, action=action, target=subject or Target.of(result), detail=detail)
                return result
            except Exception as error:
                outcome = (
                    AuditEntry.Outcome.REFUSED
                    if isinstance(error, ServiceError) and error.status < 500
                    else AuditEntry.Outcome.FAILED
                )
                record(
                    actor=actor,
                    action=action,
                    outcome=outcome,
                    target=subject or Target.of(_first_model(kwargs)),
                    message=str(error),
                    detail=detail,
                )
                if isinstance(error, ServiceError):
                    error.audited = True  # the API's error handler need not record it again
                raise

        return wrapper

    return decorate


def record_invalid_form(*, actor, action: str, target, form) -> AuditEntry:
    """A console form that never reached its service is refused here, so the audit log still shows it."""
    return record(
        actor=actor,
        action=action,
        outcome=AuditEntry.Outcome.REFUSED,
        target=Target.of(target),
        message=form_errors(form),
    )


def form_errors(form) -> str:
    return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in form.errors.items())


def record_refusal(*, actor, action: str, target, error: ServiceError) -> None:
    """A refusal that no @audited service has logged already."""
    if not getattr(error, "audited", False):
        record(
            actor=actor,
            action=action,
            outcome=AuditEntry.Outcome.REFUSED,
            target=Target.of(target),
            message=error.message,
        )
