from __future__ import annotations

from pathlib import Path

import pytest

from clouddigit.backends import hypervisor, volumes
from clouddigit.compute import services, work
from clouddigit.compute.models import VM, Volume
from clouddigit.errors import Conflict, InvalidRequest, PermissionRefused
from tests.worker import created

GiB = 2**30


def test_create_vm_makes_a_real_boot_volume_attached_as_vda(make_vm, prod):
    vm = make_vm(prod, "db-01", tags={"env": "prod"}, boot_gib=2)

    boot = vm.volumes.get()
    assert (boot.device, boot.bootable, boot.state) == ("vda", True, Volume.State.ATTACHED)
    assert volumes.info(boot.path)["virtual-size"] == 2 * GiB
    assert boot.tags == {"env": "prod"}
    assert vm.state == VM.State.STOPPED


def test_bare_metal_boots_from_sda(make_vm, prod):
    vm = make_vm(prod, "batch-01", flavor="bm-c1")
    assert vm.volumes.get().device == "sda"


def test_duplicate_vm_name_is_refused_and_leaves_nothing(make_vm, prod, dha):
    make_vm(prod, "web-01")
    files_before = sorted(Path(dha.volume_dir).iterdir())

    with pytest.raises(Conflict, match="already exists") as refused:
        make_vm(prod, "web-01")

    assert refused.value.field == "name"
    assert VM.objects.count() == 1 and Volume.objects.count() == 1
    assert sorted(Path(dha.volume_dir).iterdir()) == files_before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tags": {"Env": "prod"}}, "tags"),
        ({"tags": {"env__x": "prod"}}, "tags"),
        ({"flavor": "huge-1"}, "flavor"),
        ({"name": "bad name!"}, "name"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(make_vm, prod, kwargs, field):
    with pytest.raises(InvalidRequest) as refused:
        make_vm(prod, **{"name": "vm-1", **kwargs})
    assert refused.value.field == field
    assert not VM.objects.exists() and not Volume.objects.exists()


def test_visible_to_follows_project_and_account_grants(
    make_vm, prod, sandbox, globex_main, alice, bob, charlie
):
    make_vm(prod, "db-01")
    make_vm(sandbox, "dev-01")
    make_vm(globex_main, "gx-01")

    def names(user):
        return sorted(VM.objects.visible_to(user).values_list("name", flat=True))

    assert names(alice) == ["db-01", "dev-01"]
    assert names(bob) == ["db-01"]
    assert names(charlie) == ["gx-01"]


def test_start_and_stop_reach_the_hypervisor(make_vm, prod, alice, django_capture_on_commit_callbacks):
    vm = make_vm(prod, "db-01")

    with django_capture_on_commit_callbacks(execute=True):
        services.start_vm(actor=alice, vm=vm)
    vm.refresh_from_db()
    assert vm.state == VM.State.RUNNING
    assert hypervisor.state(vm.host.libvirt_uri, work.domain_spec(vm)) == "running"

    with django_capture_on_commit_callbacks(execute=True):
        services.stop_vm(actor=alice, vm=vm)
    vm.refresh_from_db()
    assert vm.state == VM.State.STOPPED
    assert hypervisor.state(vm.host.libvirt_uri, work.domain_spec(vm)) == "stopped"


def test_starting_a_running_vm_is_a_conflict(make_vm, prod, alice, django_capture_on_commit_callbacks):
    vm = make_vm(prod, "db-01")
    with django_capture_on_commit_callbacks(execute=True):
        services.start_vm(actor=alice, vm=vm)

    with pytest.raises(Conflict, match="is running"):
        services.start_vm(actor=alice, vm=vm)


def test_a_viewer_may_not_start_a_vm(make_vm, prod, bob):
    vm = make_vm(prod, "db-01")
    with pytest.raises(PermissionRefused):
        services.start_vm(actor=bob, vm=vm)
    vm.refresh_from_db()
    assert vm.state == VM.State.STOPPED


def test_volume_rows_match_files_on_disk(make_vm, prod, alice, dha):
    vm = make_vm(prod, "db-01")
    data = created(
        services.create_volume(actor=alice, project=prod, region=dha, name="db-01-data", size_bytes=GiB)
    )
    services.attach_volume(actor=alice, volume=data, vm=vm, device="vdb")
    volumes.write_pattern(data.path, 0, 2**20, 0x61)

    assert Path(data.path).parent == Path(dha.volume_dir)
    assert volumes.read_bytes(data.path, 0, 4) == b"aaaa"
    assert [disk.target_dev for disk in work.domain_spec(vm).disks] == ["vda", "vdb"]
