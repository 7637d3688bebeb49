"""In a browser, as acme's admin: restore db-01 to a sandbox VM without its prod tags, delete a restored VM,
and tag a VM so that the prod policy covers it."""

from __future__ import annotations

import pytest

from clouddigit.compute.models import VM, Volume
from snapshots import services
from snapshots.models import Snapshot
from tests.e2e.test_browser import browser  # noqa: F401  (a fixture)
from tests.e2e.test_console_actions import _shot, _signed_in
from tests.policies.test_scheduler import _policy

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def nightly(make_vm, prod) -> Snapshot:
    vm = make_vm(prod, "db-01", tags={"env": "prod", "role": "db"})
    snapshot = services.create_snapshot(actor=None, vm=VM.objects.get(pk=vm.pk), name="db-01-nightly")
    return Snapshot.objects.get(pk=snapshot.pk)  # taken by now: its task ran on commit


def test_restore_db01_to_a_sandbox_vm_without_the_prod_tags(browser, live_server, alice, prod, nightly):  # noqa: F811
    _policy(prod)
    page = _signed_in(browser, live_server, "alice", f"/snapshots/{nightly.pk}/")
    restore = page.locator("form[action$='/restore-vm/']")
    assert restore.locator("input[value=env]").is_checked() is False
    assert restore.locator("input[value=role]").is_checked() is True
    why = "env=prod is not kept by default: it would put this VM under policy acme-prod-default."
    assert why in restore.inner_text()
    restore.locator("input[name=name]").fill("db-01-sandbox")
    restore.locator("input[name=vpc]").fill("sandbox-vpc")
    _shot(page, "restore-vm-tags.png")
    restore.locator("button[type=submit]").click()
    page.wait_for_url(f"**/snapshots/{nightly.pk}/")
    page.locator("#restores >> text=db-01-sandbox").wait_for()
    assert (
        "env=prod not kept: it would put this VM under policy acme-prod-default."
        in page.locator("#restores").inner_text()
    )
    restored = VM.objects.get(name="db-01-sandbox")
    assert restored.vpc == "sandbox-vpc" and "env" not in restored.tags and restored.tags["role"] == "db"


def test_delete_a_restored_vm_choosing_what_happens_to_its_volumes(browser, live_server, alice, nightly):  # noqa: F811
    restore = services.restore_to_vm(actor=alice, snapshot=nightly, name="db-01-restored", vpc="sandbox-vpc")
    vm = VM.objects.get(pk=restore.vm_id)
    assert vm.state == VM.State.RUNNING
    page = _signed_in(browser, live_server, "alice", f"/compute/vms/{vm.pk}/")
    assert "stop it first, then delete it" in page.locator("#delete").inner_text()
    assert "Unknown: no guest freeze has checked it yet" in page.locator("dl.facts").inner_text()
    page.click("#power button:has-text('Stop')")
    page.locator("#delete button.danger").wait_for(timeout=15000)
    _shot(page, "vm-delete.png")

    form = page.locator("#delete form")
    form.locator("input[name=confirm]").fill("db-01-restored-typo")
    form.locator("button.danger").click()
    page.locator("#delete .error").wait_for()
    assert "Type 'db-01-restored' to confirm" in page.locator("#delete").inner_text()
    assert VM.objects.filter(pk=vm.pk, state=VM.State.STOPPED).exists()

    form = page.locator("#delete form")
    assert form.locator("input[value=delete]").first.is_checked()  # the boot volume goes by default
    form.locator("input[name=confirm]").fill("db-01-restored")
    form.locator("button.danger").click()
    page.wait_for_url("**/compute/vms/")
    assert "Deleting VM db-01-restored" in page.locator("main").inner_text()
    assert not VM.objects.filter(pk=vm.pk).exists()
    assert not Volume.objects.filter(name__startswith="db-01-restored").exists()


def test_a_vm_tagged_env_prod_shows_in_the_prod_policy_coverage(browser, live_server, alice, prod, make_vm):  # noqa: F811
    policy = _policy(prod)
    vm = make_vm(prod, "web-09")
    page = _signed_in(browser, live_server, "alice", f"/compute/vms/{vm.pk}/")
    form = page.locator("form[action$='/tags/']")
    form.locator("textarea[name=tags]").fill("env=prod\nrole=web")
    form.locator("button[type=submit]").click()
    page.locator("text=Tags of VM web-09 updated.").wait_for()
    assert VM.objects.get(pk=vm.pk).tags == {"env": "prod", "role": "web"}

    form = page.locator("form[action$='/tags/']")
    form.locator("textarea[name=tags]").fill("env=prod\nowner=bad\u0007bell")
    form.locator("button[type=submit]").click()
    page.locator("form[action$='/tags/'] .error").wait_for()
    assert "control characters" in page.locator("form[action$='/tags/']").inner_text()
    assert VM.objects.get(pk=vm.pk).tags == {"env": "prod", "role": "web"}

    page.goto(f"{live_server.url}/policies/{policy.pk}/")
    assert "web-09" in page.locator("main").inner_text()
    _shot(page, "policy-coverage-tagged-vm.png")
