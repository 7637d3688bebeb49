"""clouddigit.console: every console action fails where the user acted (htmx or not), records its refusal
once, redirects after success, asks before destroying, and a settled poll refreshes the page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from clouddigit.audit.models import AuditEntry
from clouddigit.compute.models import VM
from iam.models import RoleBinding
from iam.services import add_member, grant_role
from snapshots import services
from snapshots.models import Restore, Snapshot

GHOST = {"account": "acme", "user": "ghost", "role": "image.viewer"}


@pytest.fixture
def taken(make_vm, prod, run) -> Snapshot:
    vm = make_vm(prod, "db-01")
    return run(services.create_snapshot, actor=None, vm=VM.objects.get(pk=vm.pk), name="db-01-nightly")


def _refusals(action: str) -> int:
    return AuditEntry.objects.filter(action=action, outcome="refused").count()


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_a_refused_grant_is_shown_at_the_form_and_audited_once(client, alice, prod, htmx):
    client.force_login(alice)
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}

    response = client.post(reverse("iam:grant"), GHOST, **headers)

    assert response.status_code == 400
    page = response.content.decode()
    assert page.index("No user named &#x27;ghost&#x27; in account acme.") > page.index("Grant a role")
    assert _refusals("iam.role.grant") == 1
    # htmx puts the page in place of the one acted on; the address bar keeps the page's URL.
    assert (response.get("HX-Retarget"), response.get("HX-Reswap")) == (
        ("body", "innerHTML") if htmx else (None, None)
    )


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_an_invalid_form_is_shown_and_audited_once(client, alice, prod, htmx):
    client.force_login(alice)
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}

    response = client.post(reverse("iam:grant"), {"account": "acme", "role": "image.viewer"}, **headers)

    assert response.status_code == 400 and "Name either a user or a group." in response.content.decode()
    assert _refusals("iam.role.grant") == 1


@pytest.fixture
def dave(django_user_model, prod):
    user = django_user_model.objects.create_user("dave")
    add_member(actor=None, account=prod.account, username="dave")
    return user


def test_a_grant_redirects_after_success_and_htmx_is_told_where(client, alice, prod, dave):
    client.force_login(alice)
    data = {"account": "acme", "user": "dave", "role": "image.viewer", "where": str(prod.pk)}

    plain = client.post(reverse("iam:grant"), data)
    assert plain.status_code == 302 and plain["Location"] == f"{reverse('iam:bindings')}?account=acme"

    RoleBinding.objects.filter(user__username="dave").delete()
    htmx = client.post(reverse("iam:grant"), data, HTTP_HX_REQUEST="true")
    assert htmx.status_code == 204 and htmx["HX-Location"] == f"{reverse('iam:bindings')}?account=acme"


def test_a_service_refusal_is_audited_once_though_the_service_logs_it(client, alice, taken):
    client.force_login(alice)

    response = client.post(reverse("snapshots:delete", args=[taken.pk]), {"confirm": "db-01"})

    assert response.status_code == 400
    assert "Type &#x27;db-01-nightly&#x27; to confirm." in response.content.decode()
    assert _refusals("snapshot.delete") == 1
    assert Snapshot.objects.get(pk=taken.pk).state == Snapshot.State.AVAILABLE


def test_revoke_asks_first_without_javascript(client, alice, prod, dave):
    binding = grant_role(actor=None, role="image.viewer", account=prod.account, project=prod, username="dave")
    client.force_login(alice)
    url = reverse("iam:revoke", args=[binding.pk])
    page = client.get(reverse("iam:bindings")).content.decode()
    assert f'hx-post="{url}" hx-confirm="Revoke image.viewer from user dave?"' in page

    asked = client.post(url)
    question = asked.content.decode()
    assert asked.status_code == 200 and "Revoke image.viewer from user dave on project acme/prod?" in question
    assert 'name="confirmed" value="yes"' in question
    assert RoleBinding.objects.filter(pk=binding.pk).exists()

    done = client.post(url, {"confirmed": "yes"})
    assert done.status_code == 302 and not RoleBinding.objects.filter(pk=binding.pk).exists()


def test_a_settled_poll_stops_and_reloads_the_page(client, alice, taken):
    client.force_login(alice)
    url = reverse("snapshots:detail", args=[taken.pk])
    restore = services.restore_to_volume(actor=None, snapshot=taken, name="db-01-copy")  # no worker runs
    page = client.get(url).content.decode()
    assert f'hx-get="{url}" hx-trigger="every 3s"' in page  # a restore is on its way: the page polls

    polled = client.get(url, HTTP_HX_REQUEST="true")
    assert polled.status_code == 200 and "HX-Refresh" not in polled

    Restore.objects.filter(pk=restore.pk).update(state=Restore.State.DONE)
    settled = client.get(url, HTTP_HX_REQUEST="true")
    assert settled.status_code == 286 and settled["HX-Refresh"] == "true"
    assert 'hx-trigger="every 3s"' not in client.get(url).content.decode()
