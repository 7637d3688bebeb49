"""The OpenAPI schema tells the truth: nullable fields, the error shape on every error status, what is
paginated, and the query parameters the views really take (tests/slow/test_schemathesis.py fuzzes it)."""

from __future__ import annotations

import pytest
from django.core.exceptions import FieldDoesNotExist
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator
from rest_framework import serializers

from tests.api.test_api import api

VMS = "/api/v1/compute/vms/"


@pytest.fixture
def schema(db) -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def _project_model_serializers(base=serializers.ModelSerializer):
    for cls in base.__subclasses__():
        if not cls.__module__.startswith("rest_framework"):
            yield cls
        yield from _project_model_serializers(cls)


def _may_be_null(model, source: str) -> bool:
    """Whether the model value a dotted serializer `source` reads can be None (any step may be null)."""
    for part in source.split("."):
        try:
            field = model._meta.get_field(part)
        except FieldDoesNotExist:
            return False
        if field.null:
            return True
        if not field.is_relation:
            return False
        model = field.related_model
    return False


def test_every_field_whose_model_value_may_be_null_is_nullable_in_the_schema(schema):
    components = schema["components"]["schemas"]
    wrong = []
    for cls in _project_model_serializers():
        component = components.get(cls.__name__.removesuffix("Serializer"))
        if component is None:  # not part of the API
            continue
        for name, field in cls().fields.items():
            if getattr(field, "many", False) or field.source == "*":
                continue
            if _may_be_null(cls.Meta.model, field.source) and not component["properties"][name].get(
                "nullable"
            ):
                wrong.append(f"{cls.__name__}.{name}")
    assert wrong == [], "\n".join(wrong)


def test_every_error_status_is_documented_with_the_error_shape(schema):
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["code", "message"] and set(error["properties"]) == {
        "code",
        "message",
        "field",
    }
    missing = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            expected = {"400", "401", "403"}
            if "{" in path or any(p["name"] == "page" for p in operation.get("parameters", [])):
                expected.add("404")
            if method != "get":
                expected |= {"409", "503"}
            for code in sorted(expected):
                content = operation["responses"].get(code, {}).get("content", {})
                if content.get("application/json", {}).get("schema") != {
                    "$ref": "#/components/schemas/Error"
                }:
                    missing.append(f"{method.upper()} {path} {code}")
    assert missing == []


@pytest.mark.parametrize("path", ["/api/v1/compute/images/picker/", "/api/v1/compute/images/why-missing/"])
def test_the_picker_and_why_missing_are_plain_lists_without_list_filters(schema, path):
    operation = schema["paths"][path]["get"]
    body = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert body["type"] == "array"
    assert {p["name"] for p in operation["parameters"]} <= {"project", "region", "show_deprecated", "image"}


def test_policy_export_is_documented_as_the_yaml_it_answers(schema):
    content = schema["paths"]["/api/v1/compute/snapshot-policies/{id}/export/"]["get"]["responses"]["200"][
        "content"
    ]
    assert set(content) == {"text/yaml"}
    document = schema["components"]["schemas"][content["text/yaml"]["schema"]["$ref"].split("/")[-1]]
    assert document["type"] == "object"
    assert {"name", "schedule", "retention", "scope"} <= set(document["properties"])


def test_the_audit_export_is_documented_as_csv(schema):
    content = schema["paths"]["/api/v1/audit/entries/export/"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"text/csv"}


def test_page_and_page_size_are_documented_as_bounded_integers(schema):
    parameters = {p["name"]: p["schema"] for p in schema["paths"][VMS]["get"]["parameters"]}
    assert parameters["page"] == {"type": "integer", "minimum": 1}
    assert parameters["page_size"] == {"type": "integer", "minimum": 1, "maximum": 500}


def test_the_format_query_parameter_is_not_documented_anywhere(schema):
    for operations in schema["paths"].values():
        for operation in operations.values():
            assert "format" not in {p["name"] for p in operation.get("parameters", [])}


# --- Pagination -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "0", "-1", "501", "1.5", "٣"])
def test_a_page_size_that_is_not_a_whole_number_from_1_to_500_is_400(alice, value):
    response = api(alice).get(VMS, {"page_size": value})
    assert response.status_code == 400
    assert response.json() == {
        "code": "InvalidRequest",
        "message": "page_size must be a whole number from 1 to 500.",
        "field": "page_size",
    }


def test_page_size_within_the_bounds_pages(alice, make_vm, prod):
    for name in ("a", "b", "c"):
        make_vm(prod, name)
    body = api(alice).get(VMS, {"page_size": "2", "page": "2"}).json()
    assert body["count"] == 3 and [vm["name"] for vm in body["results"]] == ["c"]
    assert "page_size=2" in body["previous"]
    assert api(alice).get(VMS, {"page_size": "500"}).status_code == 200


@pytest.mark.parametrize("value", ["abc", "0", "-3", "last"])
def test_a_page_that_is_not_a_whole_number_from_1_is_400(alice, value):
    response = api(alice).get(VMS, {"page": value})
    assert response.status_code == 400
    assert response.json()["field"] == "page" and "whole number" in response.json()["message"]


def test_a_page_past_the_last_is_404_saying_which_is_the_last(alice, make_vm, prod):
    make_vm(prod, "a")
    response = api(alice).get(VMS, {"page": "3"})
    assert response.status_code == 404
    assert response.json() == {"code": "NotFound", "message": "There is no page 3: the last page is 1."}


# --- Filters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["tag=100%", "tag=%s", "tag=a%(b)s"])
def test_a_percent_sign_in_a_refused_filter_value_is_a_400_not_a_500(alice, query):
    response = api(alice).get(f"{VMS}?{query.replace('%', '%25')}")
    assert response.status_code == 400
    assert response.json()["field"] == "tag" and query[4:] in response.json()["message"]


def test_the_format_query_parameter_is_not_drfs_renderer_switch(alice):
    """`?format=` is not a content-negotiation switch (JSON is negotiated by Accept): `?format=xml` on
    any list answers JSON as usual instead of a 404."""
    response = api(alice).get(VMS, {"format": "xml"})
    assert response.status_code == 200 and response["Content-Type"] == "application/json"


def test_the_schema_is_served_as_json_by_accept(alice):
    response = api(alice).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200 and response.json()["openapi"].startswith("3.")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/audit/entries/0.5/"),
        ("post", "/api/v1/compute/vms/1.5/start/"),
        ("delete", "/api/v1/compute/images/a.b/"),
        ("get", "/api/v1/no-such-thing/"),
    ],
)
def test_a_url_no_api_route_takes_is_the_json_404(alice, method, path):
    """Ids with a dot match no route (the router's ids stop at dots): Django's HTML 404 was answered."""
    response = getattr(api(alice), method)(path)
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json() == {"code": "NotFound", "message": "Not found, or you may not see it."}


def test_the_schema_builds_without_a_warning(db, tmp_path):
    """drf-spectacular's warnings are schema lies or guesses: two request bodies named "Tags" made the
    snapshot tags body read as the image one ({"tags": ...} instead of {"add", "remove"})."""
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))


def test_the_snapshot_tags_body_is_add_and_remove(schema):
    body = schema["paths"]["/api/v1/compute/snapshots/{id}/tags/"]["post"]["requestBody"]["content"]
    component = body["application/json"]["schema"]["$ref"].split("/")[-1]
    assert set(schema["components"]["schemas"][component]["properties"]) == {"add", "remove"}
