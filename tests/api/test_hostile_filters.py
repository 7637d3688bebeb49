"""A `%` (or any other formatting character) in a filter is a value like any other: every console list and
every API list answers it with a result or a 400 naming the filter, never a 500."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token

from clouddigit.api.urls import router
from clouddigit.audit.filters import AuditFilter
from clouddigit.compute.filters import VMFilter, VolumeFilter
from iam.api import RoleBindingFilter
from images.filters import ImageFilter
from snapshots.filters import SnapshotFilter

HOSTILE = ["%", "%25", "%s", "%(x)s", "%d", "%%", "env=%s", "%(x)s=%(y)s", "k=%", "{0}", "{x}=1", "\x00"]

CONSOLE_LISTS = {
    "compute:vm-list": VMFilter,
    "compute:volume-list": VolumeFilter,
    "snapshots:list": SnapshotFilter,
    "images:catalogue": ImageFilter,
    "audit:entries": AuditFilter,
    "audit:export": AuditFilter,
    "iam:bindings": RoleBindingFilter,
}


def _api_lists() -> dict[str, list[str]]:
    """URL -> filters of every API list the router serves, so that a new one is covered."""
    lists = {}
    for prefix, viewset, _basename in router.registry:
        if not hasattr(viewset, "list"):
            continue
        filterset = getattr(viewset, "filterset_class", None)
        # DRF reads `format` itself (it picks the renderer) before any filter sees it.
        names = [name for name in filterset.base_filters if name != "format"] if filterset else []
        lists[f"/api/v1/{prefix}/"] = [*names, "page_size"]
    return lists


@pytest.fixture
def console(alice, prod):
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    return client


@pytest.fixture
def api_client(alice):
    token, _ = Token.objects.get_or_create(user=alice)
    return Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Token {token.key}")


@pytest.mark.parametrize(("page", "filterset"), CONSOLE_LISTS.items())
def test_console_lists_answer_hostile_filters_without_a_server_error(console, page, filterset):
    for name in filterset.base_filters:
        for value in HOSTILE:
            response = console.get(reverse(page), {name: value})
            assert response.status_code in (200, 400), (name, value, response.status_code)


@pytest.mark.parametrize(("url", "names"), _api_lists().items())
def test_api_lists_answer_hostile_filters_without_a_server_error(api_client, url, names):
    for name in names:
        for value in HOSTILE:
            response = api_client.get(url, {name: value})
            assert response.status_code in (200, 400), (name, value, response.status_code)
            if response.status_code == 400:
                assert response.json()["code"] == "InvalidRequest"


@pytest.mark.parametrize(
    ("url", "query", "message"),
    [
        ("/api/v1/compute/snapshots/", {"since": "%(x)s"}, "'%(x)s' is neither a duration"),
        ("/api/v1/compute/vms/", {"tag": "%s"}, "Tag '%s' must look like key=value"),
        ("/api/v1/compute/images/", {"tag": "%d=1"}, "Tag key '%d' is not valid"),
    ],
)
def test_a_percent_in_a_filter_is_quoted_back_as_typed(api_client, url, query, message):
    response = api_client.get(url, query)
    assert response.status_code == 400
    assert message in response.json()["message"]
