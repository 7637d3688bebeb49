"""In a browser: a refused form says why where the user acted, destructive buttons ask (the ones that
destroy data ask for the typed name), a settled operation refreshes its page, and a publisher is told
what promoting a snapshot needs."""

from __future__ import annotations

import pytest

from clouddigit.compute.models import VM
from iam.models import RoleBinding
from iam.services import add_member, grant_role
from snapshots import services
from snapshots.models import Restore, Snapshot
from tests.e2e.test_browser import SCREENSHOTS, browser  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _signed_in(browser, live_server, username: str, path: str):  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server.url}{path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"{username}-pass")
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path.split('?')[0]}")
    return page


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_a_grant_to_an_unknown_user_says_why_at_the_form(browser, live_server, alice):  # noqa: F811
    page = _signed_in(browser, live_server, "alice", "/iam/")
    page.fill("form.grant input[name=user]", "ghost")
    page.select_option("form.grant select[name=role]", "image.viewer")
    page.click("form.grant button[type=submit]")

    error = page.locator("form.grant .error")
    error.wait_for()
    assert "No user named 'ghost' in account acme." in error.inner_text()
    assert page.url.endswith("/iam/")  # no POST URL to re-submit
    _shot(page, "iam-grant-refused.png")


def test_revoke_asks_and_deleting_a_held_snapshot_asks_for_its_name(
    browser,  # noqa: F811
    live_server,
    alice,
    prod,
    make_vm,
    django_user_model,
):
    django_user_model.objects.create_user("dave", password="dave-pass")
    add_member(actor=None, account=prod.account, username="dave")
    binding = grant_role(actor=None, role="image.viewer", account=prod.account, project=prod, username="dave")
    page = _signed_in(browser, live_server, "alice", "/iam/")
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.locator(f"form[action$='/{binding.pk}/revoke/'] button").click()
    page.wait_for_function("() => true")
    assert questions == ["Revoke image.viewer from user dave?"]
    assert RoleBinding.objects.filter(pk=binding.pk).exists()
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f"form[action$='/{binding.pk}/revoke/'] button").click()
    page.locator(".msg-success").wait_for()
    assert not RoleBinding.objects.filter(pk=binding.pk).exists()

    vm = make_vm(prod, "db-01")
    snapshot = services.create_snapshot(actor=None, vm=VM.objects.get(pk=vm.pk), name="db-01-keep")
    snapshot.refresh_from_db()
    services.set_hold(actor=None, snapshot=snapshot, hold=True)
    page.goto(f"{live_server.url}/snapshots/{snapshot.pk}/")
    delete = page.locator(f"form[action$='/{snapshot.pk}/delete/']")
    delete.locator("input[name=confirm]").fill("db-01")
    delete.locator("button").click()
    page.locator("text=Type 'db-01-keep' to confirm.").wait_for()
    assert "although it is pinned" in page.locator("form[action$='/delete/'] .error").inner_text()
    assert Snapshot.objects.get(pk=snapshot.pk).state == Snapshot.State.AVAILABLE
    _shot(page, "snapshot-delete-typed-name.png")

    page.locator(f"form[action$='/{snapshot.pk}/delete/'] input[name=confirm]").fill("db-01-keep")
    page.locator(f"form[action$='/{snapshot.pk}/delete/'] button").click()
    page.wait_for_url("**/snapshots/")
    assert not Snapshot.objects.filter(pk=snapshot.pk, state=Snapshot.State.AVAILABLE).exists()


def test_a_snapshot_page_refreshes_once_its_snapshot_and_restores_settle(
    browser,  # noqa: F811
    live_server,
    alice,
    prod,
    make_vm,
):
    vm = make_vm(prod, "db-01")
    snapshot = services.create_snapshot(actor=None, vm=VM.objects.get(pk=vm.pk), name="db-01-now")
    measured = Snapshot.objects.filter(pk=snapshot.pk).values("consistency_achieved").get()
    Snapshot.objects.filter(pk=snapshot.pk).update(state=Snapshot.State.CREATING, consistency_achieved="")
    page = _signed_in(browser, live_server, "alice", f"/snapshots/{snapshot.pk}/")
    assert page.locator("text=Restore to new").count() == 0

    Snapshot.objects.filter(pk=snapshot.pk).update(state=Snapshot.State.AVAILABLE, **measured)
    page.locator("h2:has-text('Restore to new')").wait_for(timeout=15000)
    assert page.locator("#status .state").inner_text() == "Available"
    assert "got" in page.locator("dl.facts").inner_text()  # the consistency achieved

    snapshot.refresh_from_db()
    restore = services.restore_to_volume(actor=None, snapshot=snapshot, name="db-01-copy")
    Restore.objects.filter(pk=restore.pk).update(state=Restore.State.RESTORING, seconds=None)
    page.reload()
    assert "Restoring" in page.locator("#restores").inner_text()
    Restore.objects.filter(pk=restore.pk).update(state=Restore.State.DONE, seconds=1.5)
    page.wait_for_function(
        "() => document.querySelector('#restores').innerText.includes('1.50 s')", timeout=15000
    )
    _shot(page, "snapshot-settled.png")


def test_a_publisher_is_told_what_promoting_needs(browser, live_server, bob):  # noqa: F811
    page = _signed_in(browser, live_server, "bob", "/images/")
    text = page.locator("main").inner_text()
    assert "Promoting a snapshot to an image also needs a role that sees this project's snapshots" in text
    assert "snapshot.viewer" in text
    _shot(page, "images-publisher.png")


def test_a_refused_snapshot_says_why_in_its_panel_on_the_volume_page(
    browser,  # noqa: F811
    live_server,
    alice,
    prod,
    make_vm,
):
    vm = make_vm(prod, "db-01")
    volume = vm.volumes.get()
    services.raise_limit(actor=None, volume=volume, limit=1, ticket="OPS-1")
    services.create_snapshot(actor=None, volume=volume, name="only-one")
    path = f"/compute/volumes/{volume.pk}/"
    page = _signed_in(browser, live_server, "alice", path)
    # The chain as recorded when the snapshot sealed the volume's file: two layers.
    chain = page.locator("section.card", has_text="Storage chain")
    assert "As recorded" in chain.inner_text() and chain.locator("tbody tr").count() == 2

    page.fill("form.take input[name=name]", "one-too-many")
    page.click("form.take button[type=submit]")
    error = page.locator("form.take .error")
    error.wait_for()
    assert "has 1 snapshots (limit 1)" in error.inner_text()
    assert page.inner_text("nav.sidebar [aria-current=page]") == "Volumes"
    assert not Snapshot.objects.filter(name="one-too-many").exists()
    _shot(page, "volume-snapshot-refused.png")
