"""Headless Chromium (Debian's, driven by Playwright) signs in and looks at the VM list."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(
    os.environ.get("CLOUDDIGIT_SCREENSHOTS", Path(__file__).resolve().parents[2] / "screenshots")
)


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: ./scripts/install --test installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_sign_in_and_see_the_vm_list(browser, live_server, alice, make_vm, prod, ctg):
    make_vm(prod, "db-01", tags={"env": "prod", "role": "db"})
    make_vm(prod, "web-01", tags={"env": "prod", "role": "web"})
    make_vm(prod, "batch-01", region=ctg, flavor="bm-c1", tags={"env": "prod"})
    page = browser.new_page(viewport={"width": 1280, "height": 720})

    page.goto(f"{live_server.url}/compute/vms/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "alice-pass")
    page.click("button[type=submit]")
    page.wait_for_url("**/compute/vms/")

    assert page.locator("table.grid tbody tr").count() == 3
    assert page.locator("text=batch-01").is_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "vm-list.png"), full_page=True)

    # Filtering goes through htmx: only the table is swapped, and the URL follows.
    page.fill("input[name=name]", "web")
    page.wait_for_function("() => document.querySelectorAll('table.grid tbody tr').length === 1")
    assert "name=web" in page.url
    assert page.locator("table.grid tbody").inner_text().startswith("web-01")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_volume_create_attach_as_secondary_detach_and_delete_keeping_snapshots(
    browser, live_server, alice, make_vm, prod, dha
):
    from clouddigit.compute.models import Volume
    from snapshots import services as snapshots
    from snapshots.models import Snapshot

    make_vm(prod, "web-02")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/compute/volumes/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "alice-pass")
    page.click("button[type=submit]")
    page.wait_for_url("**/compute/volumes/")

    page.click("#create summary")
    page.fill("#create input[name=name]", "inspect-01")
    page.fill("#create input[name=size_gib]", "2")
    page.click("#create button[type=submit]")
    page.wait_for_url("**/compute/volumes/*-*/")
    volume = Volume.objects.get(name="inspect-01")
    assert volume.size_bytes == 2 * 2**30

    page.select_option("#attach-form select[name=vm]", label="web-02")
    page.check("#attach-form input[name=role][value=secondary]")
    page.click("#attach-form button[type=submit]")
    page.locator(".msg-success").wait_for()
    assert "attached to web-02 as vdb" in page.locator(".msg-success").inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "volume-attached.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("form[action$='/detach/'] button").click()
    page.locator("text=Detaching inspect-01").wait_for()
    page.locator("#attach-form").wait_for()
    assert Volume.objects.get(pk=volume.pk).state == "available"

    snapshots.create_snapshot(actor=None, volume=Volume.objects.get(pk=volume.pk), name="before-delete")
    page.reload()
    assert "This volume has 1 snapshot" in page.locator("#delete").inner_text()
    page.fill("#delete-form input[name=confirm]", "inspect-01")
    page.click("#delete-form button[type=submit]")
    page.locator("#delete-form .error").wait_for()
    assert "choose to keep them" in page.locator("#delete-form").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "volume-delete-asks.png"), full_page=True)

    page.check("#delete-form input[name=snapshots][value=keep]")
    page.fill("#delete-form input[name=confirm]", "inspect-01")
    page.click("#delete-form button[type=submit]")
    page.wait_for_url("**/compute/volumes/")
    assert not Volume.objects.filter(pk=volume.pk).exists()
    assert Snapshot.objects.get(name="before-delete").state == "available"
