"""The image list's API filters, by the names the schema documents."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from images.models import Image

IMAGES = "/api/v1/compute/images/"


@pytest.fixture
def api(alice):
    client = APIClient()
    client.force_authenticate(alice)
    return client


@pytest.fixture
def formats(prod, dha):
    """qcow2 found by inspection; raw only declared (not inspected yet); vhd declared, found qcow2."""
    made = [("found-qcow2", "qcow2", "qcow2"), ("declared-raw", "raw", ""), ("lied-vhd", "vhd", "qcow2")]
    for name, declared, detected in made:
        Image.objects.create(
            project=prod,
            region=dha,
            name=name,
            created_by="alice",
            state=Image.State.AVAILABLE,
            declared_format=declared,
            detected_format=detected,
        )


def names(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return sorted(image["name"] for image in response.json()["results"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("qcow2", ["found-qcow2", "lied-vhd"]),
        ("raw", ["declared-raw"]),
        ("vhd", []),
        ("", ["declared-raw", "found-qcow2", "lied-vhd"]),
    ],
)
def test_disk_format_filters_by_what_inspection_found_else_what_was_declared(api, formats, value, expected):
    assert names(api.get(IMAGES, {"disk_format": value, "project": "acme/prod"})) == expected


def test_a_bad_disk_format_is_400_naming_it(api, formats):
    response = api.get(IMAGES, {"disk_format": "vdi"})
    assert response.status_code == 400 and response.json()["field"] == "disk_format"


def test_the_old_format_filter_is_400_naming_its_new_name(api, formats):
    """It used to be documented (and always answered 404: DRF took it for its renderer switch); a client
    still sending it must not get the unfiltered list back as if it were filtered."""
    response = api.get(IMAGES, {"format": "qcow2"})
    assert response.status_code == 400
    assert response.json() == {
        "code": "InvalidRequest",
        "message": "The format filter is now called disk_format: send ?disk_format=qcow2.",
        "field": "format",
    }
