"""`clouddigit compute vm tag|delete`, in-process against the API."""

from __future__ import annotations

import json

import pytest

from clouddigit.compute.models import VM, Volume

pytestmark = pytest.mark.django_db


def test_vm_tag_sets_and_unsets(cli, alice, make_vm, prod):
    make_vm(prod, "web-01", tags={"env": "dev", "role": "web"})
    result = cli(
        alice, "compute", "vm", "tag", "web-01", "--set", "env=prod", "--unset", "role", "-o", "json"
    )
    assert result.code == 0, result.err
    assert json.loads(result.out)["tags"] == {"env": "prod"}
    refused = cli(alice, "compute", "vm", "tag", "web-01", "--set", "Env=prod")
    assert refused.code == 1 and "ERROR: InvalidRequest: Tag key 'Env' is not valid" in refused.err


def test_vm_delete_refuses_a_running_vm_then_deletes_it_stopped(cli, alice, make_vm, prod, committed):
    vm = make_vm(prod, "web-01")
    VM.objects.filter(pk=vm.pk).update(state=VM.State.RUNNING)
    refused = cli(alice, "compute", "vm", "delete", "web-01", "--confirm", "web-01")
    assert refused.code == 1 and "stop it first" in refused.err
    VM.objects.filter(pk=vm.pk).update(state=VM.State.STOPPED)
    wrong = cli(alice, "compute", "vm", "delete", "web-01", "--confirm", "web-1")
    assert wrong.code == 1 and "Type 'web-01' to confirm" in wrong.err
    done = cli(
        alice, "compute", "vm", "delete", "web-01", "--confirm", "web-01", "--keep-volume", "web-01-boot"
    )
    assert done.code == 0, done.err
    assert "deleting" in done.out and not VM.objects.filter(pk=vm.pk).exists()
    assert Volume.objects.get(name="web-01-boot").state == Volume.State.AVAILABLE
