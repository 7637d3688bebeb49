"""What the OpenAPI schema adds to drf-spectacular's: every error status a view can answer, with the one
error shape (clouddigit.api.errors), and the filter parameters of clouddigit.api.base.FilterBackend."""

from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.contrib.django_filters import DjangoFilterExtension
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="e.g. InvalidRequest, NotFound, Conflict")
    message = serializers.CharField(help_text="What went wrong and what to do next")
    field = serializers.CharField(required=False, help_text="The input at fault, for bad input")


ERRORS = {
    "400": "Bad input: a body field, a filter or page parameter (`field` names it)",
    "401": "No token, or not a valid one",
    "403": "Your roles do not allow this",
    "404": "No such object that you can see, or no such page",
    "409": "The object's state does not allow this now",
    "415": "The body's Content-Type is not one this operation takes",
    "503": "A backend (hypervisor, object store) does not answer; try again later",
}


class AutoSchema(openapi.AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        for code in self._error_statuses(path, operation):
            if code not in operation["responses"]:
                response = self._get_response_for_code(ErrorSerializer, code)
                operation["responses"][code] = {**response, "description": ERRORS[code]}
        return operation

    def _error_statuses(self, path: str, operation: dict) -> list[str]:
        codes = ["400", "401", "403"]
        paginated = any(parameter["name"] == "page" for parameter in operation.get("parameters", []))
        if "{" in path or paginated:
            codes.append("404")
        if self.method != "GET":
            codes += ["409", "503"]
        if "requestBody" in operation:
            codes.append("415")
        return codes


class FilterBackendExtension(DjangoFilterExtension):
    """drf-spectacular matches filter backends by exact class: document ours as django-filter's."""

    target_class = "clouddigit.api.base.FilterBackend"
