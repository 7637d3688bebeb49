"""Headless Chromium uploads a real qcow2 image through the console (XHR PUT with a progress bar, into a
real S3), sees a VMDK declared as qcow2 refused with the spec's text, and asks the VM-create page why an
image is missing. Screenshots go to /tmp/shots/."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from images.models import Image
from tests.e2e.test_browser import browser  # noqa: F401  (the fixture: Debian's Chromium via Playwright)
from tests.worker import created

SHOTS = Path("/tmp/shots")
VMDK_REFUSAL = "ERROR: ImageUploadFailed: format 'qcow2' but file has VMDK signature"
# Kept across the page loads of one tab: every percentage the progress bar showed.
RECORD_PROGRESS = """
document.addEventListener("DOMContentLoaded", () => {
  const percent = document.querySelector("[data-upload-percent]");
  if (!percent) return;
  new MutationObserver(() => {
    const seen = JSON.parse(sessionStorage.getItem("percentages") || "[]");
    seen.push(percent.textContent);
    sessionStorage.setItem("percentages", JSON.stringify(seen));
  }).observe(percent, { childList: true, characterData: true, subtree: true });
});
"""


@pytest.fixture
def qcow2_with_data(tmp_path):
    path = tmp_path / "web-base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 4M", str(path)], check=True, capture_output=True
    )
    return path


@pytest.fixture
def vmdk(tmp_path):
    path = tmp_path / "converted.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(path), "16M"], check=True)
    return path


def _sign_in(page, live_server, then: str) -> None:
    page.goto(f"{live_server.url}{then}")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "alice-pass")
    page.click("button[type=submit]")
    page.wait_for_url(f"**{then}")


def _upload(page, live_server, name: str, path: Path, fmt: str = "qcow2") -> None:
    page.goto(f"{live_server.url}/images/upload/")
    page.select_option("select[name=region]", "bd-dha-1")
    page.fill("input[name=name]", name)
    page.select_option("select[name=format]", fmt)
    page.fill("input[name=os_family]", "ubuntu")
    page.fill("input[name=cis_level]", "1")
    page.set_input_files("input[name=file]", str(path))
    page.click("button[data-upload-submit]")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_upload_an_image_watch_the_progress_and_see_a_refusal(
    browser,  # noqa: F811
    live_server,
    alice,
    prod,
    dha,
    image_stores,
    qcow2_with_data,
    vmdk,
):
    SHOTS.mkdir(parents=True, exist_ok=True)
    Image.objects.create(
        project=None,
        region=dha,
        name="ubuntu-24.04",
        slot="stock",
        state="available",
        created_by="system",
        tags={"os-family": "ubuntu"},
        detected_format="qcow2",
        virtual_size=2 * 2**30,
    )
    Image.objects.create(
        project=None,
        region=dha,
        name="rocky-9-cis",
        slot="hardened",
        state="available",
        created_by="system",
        tags={"os-family": "rocky", "cis-level": "1", "owner": "cloud-digit", "created-at": "2026-05-01"},
        openscap_score=92.5,
        detected_format="qcow2",
        virtual_size=10 * 2**30,
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script(RECORD_PROGRESS)
    _sign_in(page, live_server, "/images/upload/")
    # A slow link, so the bar has something to show between 0 and 100%.
    network = page.context.new_cdp_session(page)
    network.send("Network.enable")
    network.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 1024 * 1024},
    )

    _upload(page, live_server, "web-base", qcow2_with_data)
    page.wait_for_function(
        "() => { const p = document.querySelector('[data-upload-percent]');"
        " return p && parseInt(p.textContent) >= 20 && parseInt(p.textContent) < 90; }"
    )
    assert "MB/s" in page.inner_text("[data-upload-rate]")
    page.screenshot(path=str(SHOTS / "image-upload-progress.png"), full_page=True)
    page.wait_for_url("**/images/*-*-*-*-*/", timeout=60_000)
    network.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )

    seen = page.evaluate("JSON.parse(sessionStorage.getItem('percentages') || '[]')")
    assert seen[-1] == "100%" and any(0 < int(p.rstrip("%")) < 100 for p in seen), seen
    image = Image.objects.get(name="web-base")
    assert image.state == "available" and image.tags["cis-level"] == "1"
    assert image_stores["bd-dha-1"].head(image.object_key)["sha256"] == image.sha256
    assert page.inner_text("#status .state") == "Available"
    assert image.sha256 in page.inner_text("#status")
    page.screenshot(path=str(SHOTS / "image-detail.png"), full_page=True)

    _upload(page, live_server, "converted", vmdk)
    error = page.locator("[data-upload-error]")
    error.wait_for(state="visible")
    assert error.inner_text() == VMDK_REFUSAL
    assert "--format vmdk" in page.inner_text("[data-upload-hint]")
    assert page.locator("[data-upload-progress]").is_hidden() and page.inner_text("[data-upload-state]") == ""
    page.screenshot(path=str(SHOTS / "image-upload-refused.png"), full_page=True)
    assert Image.objects.get(name="converted").state == "failed"

    page.goto(f"{live_server.url}/images/")
    assert page.locator("#custom").get_by_text("web-base").is_visible()
    page.screenshot(path=str(SHOTS / "image-catalogue.png"), full_page=True)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_vm_create_page_explains_why_an_image_is_missing(browser, live_server, alice, prod, dha, ctg):  # noqa: F811
    for region, name, deprecated in (
        (dha, "golden-web", False),
        (dha, "golden-old", True),
        (ctg, "golden-db", False),
    ):
        Image.objects.create(
            project=prod,
            region=region,
            name=name,
            state="available",
            created_by="alice",
            tags={"os-family": "debian"},
            detected_format="qcow2",
            virtual_size=2**30,
            deprecated_at=timezone.now() - timedelta(days=1) if deprecated else None,
            deprecation_note="use golden-web" if deprecated else "",
        )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _sign_in(page, live_server, "/images/launch/")
    page.select_option("select[name=region]", "bd-dha-1")
    page.wait_for_function("() => document.querySelector('#picker').textContent.includes('golden-web')")
    options = page.locator("select[name=image] option").all_inner_texts()
    assert any("golden-web" in o for o in options) and not any("golden-old" in o for o in options)

    page.check("#show-deprecated")
    page.wait_for_function("() => document.querySelector('#picker').textContent.includes('golden-old')")

    page.fill("input[name=why]", "golden-db")
    page.click("button[form=why-form]")
    page.wait_for_function("() => document.querySelector('#why').textContent.includes('Copy it to bd-dha-1')")
    assert "The image is in region bd-ctg-1, not bd-dha-1." in page.inner_text("#why")
    page.screenshot(path=str(SHOTS / "vm-create-why-missing.png"), full_page=True)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_promoting_all_disks_of_a_vm_snapshot_is_refused_on_its_page(
    browser,  # noqa: F811
    live_server,
    alice,
    prod,
    dha,
    make_vm,
):
    from clouddigit.compute import services as compute
    from snapshots import services as snapshot_services

    vm = make_vm(prod, "db-01")
    data = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="db-01-data", size_bytes=8 * 2**20)
    )
    compute.attach_volume(actor=None, volume=data, vm=vm, device="vdb")
    snapshot = snapshot_services.create_snapshot(actor=None, vm=vm, name="db-01-nightly")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _sign_in(page, live_server, f"/snapshots/{snapshot.pk}/")

    promote = page.locator("#promote")
    assert "Only one disk can be promoted" in promote.inner_text()
    promote.locator("select[name=device]").select_option("")
    promote.locator("input[name=name]").fill("db-base")
    promote.get_by_role("button", name="Promote to image").click()
    page.wait_for_load_state()
    error = page.locator("#promote .error")
    assert error.inner_text().startswith(
        "ImagePromoteFailed: snapshot has multiple volumes attached (vda, vdb)."
    )
    assert page.inner_text("nav.sidebar [aria-current=page]") == "Snapshots"
    page.screenshot(path=str(SHOTS / "snapshot-promote-refused.png"), full_page=True)
