"""VM list with 5,000 VMs: median latency next to a bare view's in the same run, and query count.

Prints `name=value` lines; it fails only if the query count grows with the rows.
"""

from __future__ import annotations

import statistics
import time

import pytest
from django.db import connection
from django.http import HttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import include, path

from clouddigit.compute.models import VM

ROWS = 5000
RUNS = 15


def bare(request):
    return HttpResponse("ok")


urlpatterns = [path("bare/", bare), path("", include("clouddigit.urls"))]


def _median_ms(client, url: str) -> float:
    client.get(url)
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return statistics.median(timings)


@pytest.mark.bench
def test_vm_list_latency_with_5000_vms(client, settings, alice, make_vm, prod, capsys):
    settings.ROOT_URLCONF = __name__
    template = make_vm(prod, "template-vm")
    VM.objects.bulk_create(
        VM(
            project=prod,
            region=template.region,
            host=template.host,
            name=f"vm-{i:05d}",
            flavor="std-2x4",
            vpc="bench-vpc",
            tags={"env": "prod", "n": str(i % 7)},
        )
        for i in range(ROWS)
    )
    client.force_login(alice)

    bare_ms = _median_ms(client, "/bare/")
    list_ms = _median_ms(client, "/compute/vms/")
    filtered_ms = _median_ms(client, "/compute/vms/?tag=n=3&page=5")
    with CaptureQueriesContext(connection) as queries:
        client.get("/compute/vms/?page=50")

    with capsys.disabled():
        print()
        print(f"vm_list_rows={ROWS + 1}")
        print(f"bare_view_median_ms={bare_ms:.2f}")
        print(f"vm_list_median_ms={list_ms:.2f}")
        print(f"vm_list_tag_filter_median_ms={filtered_ms:.2f}")
        print(f"vm_list_to_bare_ratio={list_ms / bare_ms:.1f}")
        print(f"vm_list_queries={len(queries)}")
    assert len(queries) <= 12
