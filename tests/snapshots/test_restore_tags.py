"""A restored VM keeps only the tags asked for: by default none that would put it under a snapshot
policy, and the restore says why; its guest agent is unknown until a freeze finds out, dated."""

from __future__ import annotations

import pytest
from django.urls import reverse

from clouddigit.compute import services as compute
from clouddigit.compute.models import VM
from clouddigit.errors import InvalidRequest
from policies.engine import in_scope
from snapshots import services
from snapshots.models import Restore, Snapshot
from tests.api.test_api import api
from tests.policies.test_scheduler import _policy

pytestmark = pytest.mark.django_db
WHY = "env=prod not kept: it would put this VM under policy acme-prod-default."


@pytest.fixture
def nightly(make_vm, prod, run) -> Snapshot:
    vm = make_vm(prod, "db-01", tags={"env": "prod", "role": "db"})
    return run(services.create_snapshot, actor=None, vm=VM.objects.get(pk=vm.pk), name="db-01-nightly")


@pytest.fixture
def policy(prod):
    return _policy(prod)


def test_by_default_a_restored_vm_keeps_no_policy_scope_tag_and_says_why(alice, nightly, policy, run):
    restore = run(services.restore_to_vm, actor=alice, snapshot=nightly, name="db-01-sbx", vpc="sandbox-vpc")
    vm = VM.objects.get(pk=restore.vm_id)
    assert vm.tags == {"role": "db", "restored-from": str(nightly.pk)[:8]}
    assert vm not in in_scope(policy)
    assert WHY in Restore.objects.get(pk=restore.pk).warnings


def test_keeping_the_prod_tag_is_a_choice(alice, nightly, policy, run):
    restore = run(
        services.restore_to_vm,
        actor=alice,
        snapshot=nightly,
        name="db-01-twin",
        vpc="prod-vpc",
        keep_tags=["env", "role"],
    )
    vm = VM.objects.get(pk=restore.vm_id)
    assert vm.tags["env"] == "prod" and vm in in_scope(policy)
    with pytest.raises(InvalidRequest, match="had no tag 'owner'"):
        services.restore_to_vm(actor=alice, snapshot=nightly, name="x", vpc="v", keep_tags=["owner"])


def test_without_policies_every_tag_is_kept(alice, nightly, run):
    restore = run(services.restore_to_vm, actor=alice, snapshot=nightly, name="db-01-b", vpc="sandbox-vpc")
    assert VM.objects.get(pk=restore.vm_id).tags["env"] == "prod"


def test_the_api_takes_the_tags_to_keep(alice, nightly, policy, django_capture_on_commit_callbacks):
    url = f"/api/v1/compute/snapshots/{nightly.pk}/restore-vm/"
    with django_capture_on_commit_callbacks(execute=True):
        answer = api(alice).post(url, {"name": "db-01-c", "vpc": "v", "keep_tags": []}, format="json")
    assert answer.status_code == 202, answer.json()
    assert VM.objects.get(name="db-01-c").tags == {"restored-from": str(nightly.pk)[:8]}


def test_the_restore_form_lists_the_tags_unticking_the_policy_ones_and_says_why(
    client, alice, nightly, policy, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    page = client.get(reverse("snapshots:detail", args=[nightly.pk])).content.decode()
    assert 'name="keep_tags" value="role"' in page and "checked" in page.split('value="role"')[1][:40]
    assert 'value="env"' in page and "checked" not in page.split('value="env"')[1][:20]
    assert "env=prod is not kept by default: it would put this VM under policy acme-prod-default." in page
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(
            reverse("snapshots:restore-vm", args=[nightly.pk]),
            {"name": "db-01-sbx", "vpc": "sandbox-vpc", "keep_tags": ["role"]},
        )
    assert answer.status_code == 302
    vm = VM.objects.get(name="db-01-sbx")
    assert "env" not in vm.tags and vm.tags["role"] == "db"


def test_a_restored_vm_says_its_guest_agent_is_unknown_until_a_freeze_finds_out(client, alice, nightly, run):
    restore = run(services.restore_to_vm, actor=alice, snapshot=nightly, name="db-01-r", vpc="v")
    vm = VM.objects.get(pk=restore.vm_id)
    assert vm.guest_agent == VM.GuestAgent.UNKNOWN and vm.guest_agent_checked_at is None
    client.force_login(alice)
    page = client.get(reverse("compute:vm-detail", args=[vm.pk])).content.decode()
    assert "Unknown: no guest freeze has checked it yet (a restored VM starts so" in page
    assert vm.state == VM.State.RUNNING
    run(services.create_snapshot, actor=alice, vm=vm, name="db-01-r-first")
    vm.refresh_from_db()
    assert vm.guest_agent == VM.GuestAgent.RUNNING and vm.guest_agent_checked_at is not None
    page = client.get(reverse("compute:vm-detail", args=[vm.pk])).content.decode()
    assert f"as the last guest freeze found it, {vm.guest_agent_checked_at:%Y-%m-%d %H:%M} UTC" in page
    assert compute  # the module the VM page's data comes from
