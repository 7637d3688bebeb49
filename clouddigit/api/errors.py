"""Every API error is `{"code": ..., "message": ...}` (plus "field" for bad input).

Refused writes that a service did not log itself (bad JSON, a failed serializer, an object the caller
may not see) are written to the audit log here.
"""

from __future__ import annotations

from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from clouddigit.audit.log import record
from clouddigit.audit.models import AuditEntry
from clouddigit.errors import ServiceError

NOT_FOUND = {"code": "NotFound", "message": "Not found, or you may not see it."}


def _first_error(detail, path: str = "") -> tuple[str, str]:
    """The first (field, message) of a DRF ValidationError's nested detail."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            field = key if key != "non_field_errors" else ""
            return _first_error(value, f"{path}.{field}".strip(".") if field else path)
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], path)
    return path, str(detail)


def _body(error: Exception) -> tuple[int, dict]:
    if isinstance(error, ServiceError):
        return error.status, error.as_dict()
    if isinstance(error, exceptions.ValidationError):
        field, message = _first_error(error.detail)
        body = {"code": "InvalidRequest", "message": f"{field}: {message}" if field else message}
        if field:
            body["field"] = field
        return status.HTTP_400_BAD_REQUEST, body
    if isinstance(error, Http404 | exceptions.NotFound):
        return 404, NOT_FOUND
    if isinstance(error, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return 401, {"code": "NotAuthenticated", "message": str(error.detail)}
    if isinstance(error, exceptions.PermissionDenied):
        return 403, {"code": "PermissionDenied", "message": str(error.detail)}
    if isinstance(error, exceptions.APIException):
        return error.status_code, {"code": error.__class__.__name__, "message": str(error.detail)}
    return 0, {}


def handle(error: Exception, context: dict):
    status_code, body = _body(error)
    if not status_code:
        return exception_handler(error, context)
    request, view = context.get("request"), context.get("view")
    if (
        request is not None
        and request.method not in ("GET", "HEAD", "OPTIONS")  # a write
        and not getattr(error, "audited", False)
        and status_code != 401
    ):
        operation = getattr(view, "action", None) or request.method.lower()
        record(
            actor=request.user,
            action=f"api.{getattr(view, 'basename', 'unknown')}.{operation}",
            outcome=AuditEntry.Outcome.REFUSED,
            message=body["message"],
            detail={"path": request.path, "status": status_code},
        )
    response = Response(body, status=status_code)
    if status_code == 401:
        response["WWW-Authenticate"] = 'Token realm="api"'
    return response


@csrf_exempt
def not_found(request, *args, **kwargs):
    """Any URL under the API that no route takes (an id with a dot in it, a typo): the API's 404, not
    Django's HTML page."""
    return JsonResponse(NOT_FOUND, status=404)
