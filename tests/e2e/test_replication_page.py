"""In a browser: Snapshots → Replication shows each region pair's health, the copies in flight, the
inter-region link and transfer, and refreshes itself."""

from __future__ import annotations

import pytest

from clouddigit.backends import volumes
from clouddigit.compute import services as compute
from snapshots import replication, replication_metrics, services
from snapshots.models import Snapshot
from tests.e2e.test_browser import browser  # noqa: F401  (a fixture)
from tests.e2e.test_console_actions import _shot, _signed_in
from tests.snapshots.test_replication_metrics import copy_row

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
MiB = 2**20


def test_the_replication_page_shows_health_and_refreshes_itself(
    browser,  # noqa: F811
    live_server,
    alice,
    prod,
    dha,
    image_stores,
    django_capture_on_commit_callbacks,
):
    volume = compute.create_volume(actor=None, project=prod, region=dha, name="db-data", size_bytes=16 * MiB)
    volumes.write_pattern(volume.path, 0, 8 * MiB, 0x21)
    snapshot = services.create_snapshot(actor=None, volume=volume, name="db-data-nightly")
    snapshot.refresh_from_db()  # taken by the eager task
    with django_capture_on_commit_callbacks(execute=True):
        replication.copy_snapshot(actor=alice, snapshot=snapshot, target_region="bd-ctg-1", name="db-data-dr")
    stalled = copy_row(prod, age_seconds=2100, name="db-logs-dr")
    Snapshot.objects.filter(pk=stalled.pk).update(bytes_total=8 * MiB, bytes_done=2 * MiB, step="sending")
    replication_metrics.record_failure(stalled, "test: 503 from bd-ctg-1")

    page = _signed_in(browser, live_server, "alice", "/snapshots/replication/")
    row = page.locator(".replication-metrics tbody tr").first
    assert "bd-dha-1 → bd-ctg-1" in row.inner_text() and row.locator(".health-alert").count() == 1
    assert "db-logs-dr" in page.locator("#in-flight").inner_text()
    assert page.locator("#inter-region .health-healthy").inner_text().lower() == "up"
    assert "4.0\xa0MB" in page.locator("#usage").inner_text()  # one chunk content, sent once
    _shot(page, "replication-page.png")

    Snapshot.objects.filter(pk=stalled.pk).update(bytes_done=6 * MiB)
    page.wait_for_function(
        "() => document.querySelector('#in-flight').innerText.includes('75%')", timeout=20000
    )
