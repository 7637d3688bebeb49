"""Headless Chromium walks the console's main pages with the Content-Security-Policy on: no violation
is reported, and what used inline code still works (the scope picker, htmx filtering and polling, the
image upload's XHR and progress bar, Swagger UI)."""

from __future__ import annotations

import pytest

from snapshots import services as snapshot_services
from tests.e2e.test_browser import browser  # noqa: F401  (the fixture: Debian's Chromium via Playwright)
from tests.e2e.test_image_upload import _sign_in, _upload, qcow2_with_data  # noqa: F401

# Kept across the page loads of one tab: every violation the browser reported.
RECORD_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  const seen = JSON.parse(sessionStorage.getItem("csp") || "[]");
  seen.push(location.pathname + ": " + event.violatedDirective + " " + event.blockedURI);
  sessionStorage.setItem("csp", JSON.stringify(seen));
});
"""


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_console_works_under_its_content_security_policy(
    browser,  # noqa: F811
    live_server,
    alice,
    prod,
    sandbox,
    dha,
    make_vm,
    data_volume,
    image_stores,
    qcow2_with_data,  # noqa: F811
):
    make_vm(prod, "db-01")
    make_vm(prod, "web-01")
    snapshot = snapshot_services.create_snapshot(actor=alice, volume=data_volume, name="nightly")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script(RECORD_VIOLATIONS)
    console_errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and console_errors.append(message.text))

    _sign_in(page, live_server, "/compute/vms/")
    response = page.goto(f"{live_server.url}/compute/vms/")
    assert "script-src 'self';" in response.headers["content-security-policy"]
    page.fill("input[name=name]", "web")  # htmx swaps the table
    page.wait_for_function("() => document.querySelectorAll('table.grid tbody tr').length === 1")

    # The scope picker submits on change (was an inline onchange handler).
    page.select_option("header select[name=project]", str(sandbox.pk))
    page.wait_for_function(
        f"() => document.querySelector('header select[name=project]').value === '{sandbox.pk}'"
    )
    page.select_option("header select[name=project]", str(prod.pk))
    page.wait_for_function(
        f"() => document.querySelector('header select[name=project]').value === '{prod.pk}'"
    )

    page.goto(f"{live_server.url}/snapshots/{snapshot.pk}/")
    assert "nightly" in page.inner_text("main")
    page.goto(f"{live_server.url}/iam/")
    assert "Role bindings" in page.inner_text("main h1")

    _upload(page, live_server, "web-base", qcow2_with_data)  # XHR PUT and its progress bar
    page.wait_for_url("**/images/*-*-*-*-*/", timeout=60_000)

    docs = page.goto(f"{live_server.url}/api/v1/docs/")
    assert "'unsafe-inline'" in docs.headers["content-security-policy"]
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    page.wait_for_selector(".opblock-tag", timeout=30_000)

    page.goto(f"{live_server.url}/compute/vms/")
    violations = page.evaluate("JSON.parse(sessionStorage.getItem('csp') || '[]')")
    assert violations == [], violations
    assert [text for text in console_errors if "Content Security Policy" in text] == [], console_errors
