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
