"""In a browser: "Copy to region" on a snapshot's page leads to the copy's page, which shows its progress
live (bytes done / total, sent, rate, time left) and reloads once the copy has landed."""

from __future__ import annotations

import pytest

from clouddigit.backends import volumes
from clouddigit.compute import services as compute
from snapshots import replication, replication_work, services
from snapshots.models import Snapshot
from tests.e2e.test_browser import browser  # noqa: F401  (a fixture)
from tests.e2e.test_console_actions import _shot, _signed_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
MiB = 2**20


def test_copy_to_region_shows_its_progress_until_it_lands(
    browser,  # noqa: F811
    live_server,
    alice,
    prod,
    dha,
    image_stores,
    monkeypatch,
):
    volume = compute.create_volume(actor=None, project=prod, region=dha, name="db-data", size_bytes=16 * MiB)
    volumes.write_pattern(volume.path, 0, 8 * MiB, 0x21)
    snapshot = services.create_snapshot(actor=None, volume=volume, name="db-data-nightly")
    queued = []
    monkeypatch.setattr(
        replication, "enqueue", lambda task, *args, **kw: queued.append(args)
    )  # no worker yet

    page = _signed_in(browser, live_server, "alice", f"/snapshots/{snapshot.pk}/")
    form = page.locator("#copy form")
    form.locator("select[name=target_region]").select_option("bd-ctg-1")
    form.locator("input[name=name]").fill("db-data-dr")
    form.locator("button").click()
    page.locator("#copy-progress").wait_for()
    copy = Snapshot.objects.get(name="db-data-dr")
    assert page.url.endswith(f"/snapshots/{copy.pk}/") and queued == [(str(copy.pk),)]
    assert page.locator("#status .state").inner_text() == "Creating"
    assert page.locator("text=Restore to new").count() == 0  # not restorable until it has landed

    Snapshot.objects.filter(pk=copy.pk).update(bytes_total=8 * MiB, bytes_done=4 * MiB, bytes_sent=4 * MiB)
    page.wait_for_function(
        "() => document.querySelector('#copy-progress').innerText.includes('50%')", timeout=15000
    )
    assert "4.0\xa0MB of 8.0\xa0MB" in page.locator("#copy-progress").inner_text()
    assert "Time left" in page.locator("#copy-progress").inner_text()
    _shot(page, "snapshot-copy-progress.png")

    replication_work.send(str(copy.pk))  # what the replication worker does, then the target's worker
    replication_work.land(str(copy.pk))
    page.locator("h2:has-text('Restore to new')").wait_for(timeout=15000)
    assert page.locator("#status .state").inner_text() == "Available"
    assert "100%" in page.locator("#copy-progress").inner_text()
    _shot(page, "snapshot-copy-landed.png")
