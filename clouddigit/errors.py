"""Domain errors: a code and the exact text the user sees, in the console, the API and the CLI alike.

The API answers `{"code": ..., "message": ...}` (plus "field" for bad input) with `status`; the console
shows the message where the user acted; the CLI prints `ERROR: <code>: <message>`.
"""

from __future__ import annotations


class ServiceError(Exception):
    code = "Error"
    status = 400
    audited = False  # the audit log has it (@audited or the service): callers do not record it again

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @property
    def shown(self) -> str:
        """What the console shows: a domain error keeps its code, as the spec writes it
        ("ImagePromoteFailed: snapshot has multiple volumes attached"); a generic one is its message."""
        return self.message if self.code in GENERIC_CODES else str(self)

    def as_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return body


class InvalidRequest(ServiceError):
    code = "InvalidRequest"
    status = 400


class PermissionRefused(ServiceError):
    code = "PermissionDenied"
    status = 403


class Conflict(ServiceError):
    code = "Conflict"
    status = 409


class BackendUnavailable(ServiceError):
    code = "BackendUnavailable"
    status = 503


class NotFound(ServiceError):
    """Something the request names that does not exist, e.g. a page past the last."""

    code = "NotFound"
    status = 404


# Codes that say only what kind of refusal it is: the console shows their message alone.
GENERIC_CODES = {
    ServiceError.code,
    InvalidRequest.code,
    PermissionRefused.code,
    Conflict.code,
    BackendUnavailable.code,
    NotFound.code,
}
