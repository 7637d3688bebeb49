"""The hypervisor adapter against libvirt's real test driver and the shipped fake-host files."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from clouddigit.backends import hypervisor
from clouddigit.backends.hypervisor import DiskSpec, DomainSpec, HypervisorError
from clouddigit.backends.hypervisor.guest_freeze import _freeze_domain

HOSTS_DIR = Path(__file__).resolve().parents[2] / "clouddigit" / "backends" / "hosts"
DHA_1 = f"test://{HOSTS_DIR / 'bd-dha-1-host-1.xml'}"
DHA_2 = f"test://{HOSTS_DIR / 'bd-dha-1-host-2.xml'}"


@pytest.fixture
def spec(tmp_path: Path) -> DomainSpec:
    vm_uuid = str(uuid.uuid4())
    return DomainSpec(
        name=f"vm-{vm_uuid[:8]}",
        uuid=vm_uuid,
        vcpus=2,
        memory_mib=4096,
        disks=[
            DiskSpec(str(tmp_path / "root.qcow2"), "vda", "virtio", "qcow2", boot=True),
            DiskSpec(str(tmp_path / "data.qcow2"), "sda", "scsi", "qcow2"),
        ],
    )


def _disk_sources(dom: libvirt.virDomain) -> list[str]:
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return [source.get("file") for source in root.findall("./devices/disk/source")]


# --- Host files and connections ---------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["bd-dha-1", "bd-ctg-1"])
def test_each_region_has_host_files_describing_nodes_without_domains(region: str) -> None:
    files = sorted(HOSTS_DIR.glob(f"{region}-*.xml"))
    assert files
    for path in files:
        conn = libvirt.open(f"test://{path}")
        try:
            assert conn.listAllDomains() == []
            assert conn.getInfo()[1] > 0 and conn.getInfo()[2] > 0
        finally:
            conn.close()


def test_host_info_reads_the_fake_host_file() -> None:
    info = hypervisor.host_info(DHA_1)
    assert info["hostname"] == "bd-dha-1-host-1"
    assert (info["cpus"], info["memory_mib"]) == (32, 131072)
    assert info["hypervisor"].lower() == "test"
    assert hypervisor.host_info(DHA_2)["cpus"] == 16


def test_connection_is_one_long_lived_object_per_uri() -> None:
    assert hypervisor.connection(DHA_1) is hypervisor.connection(DHA_1)
    assert hypervisor.connection(DHA_1) is not hypervisor.connection(DHA_2)


def test_dead_connection_is_reopened_and_domain_recreated_from_spec(spec: DomainSpec) -> None:
    first = hypervisor.connection(DHA_1)
    hypervisor.ensure_domain(DHA_1, spec)
    first.close()

    second = hypervisor.connection(DHA_1)
    assert second is not first and second.isAlive()
    with pytest.raises(libvirt.libvirtError):
        second.lookupByUUIDString(spec.uuid)  # the test driver's state died with the connection
    assert hypervisor.ensure_domain(DHA_1, spec).UUIDString() == spec.uuid


def _child_uses_own_connection(uri: str, parent_conn_id: int, spec: DomainSpec, results) -> None:
    conn = hypervisor.connection(uri)
    try:
        conn.lookupByUUIDString(spec.uuid)
        known_before = True
    except libvirt.libvirtError:
        known_before = False
    hypervisor.start(uri, spec)
    results.put((id(conn) == parent_conn_id, known_before, hypervisor.state(uri, spec)))


def test_forked_process_opens_its_own_connection_and_recreates_the_domain(spec: DomainSpec) -> None:
    parent_conn = hypervisor.connection(DHA_1)
    hypervisor.start(DHA_1, spec)

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_child_uses_own_connection, args=(DHA_1, id(parent_conn), spec, results))
    child.start()
    reused_parent_connection, known_before, child_state = results.get(timeout=10)
    child.join(timeout=10)

    assert child.exitcode == 0
    assert not reused_parent_connection
    assert not known_before
    assert child_state == "running"
    assert hypervisor.connection(DHA_1) is parent_conn and parent_conn.isAlive()
    assert hypervisor.state(DHA_1, spec) == "running"


def test_missing_host_file_error_names_the_uri() -> None:
    uri = f"test://{HOSTS_DIR / 'bd-xxx-9-host-9.xml'}"
    with pytest.raises(HypervisorError) as caught:
        hypervisor.connection(uri)
    assert uri in str(caught.value)
    assert caught.value.uri == uri


# --- Domains and lifecycle --------------------------------------------------------------------------------


def test_ensure_domain_is_idempotent(spec: DomainSpec) -> None:
    first = hypervisor.ensure_domain(DHA_1, spec)
    second = hypervisor.ensure_domain(DHA_1, spec)

    assert first.UUIDString() == second.UUIDString() == spec.uuid
    conn = hypervisor.connection(DHA_1)
    assert [d.UUIDString() for d in conn.listAllDomains()].count(spec.uuid) == 1
    assert _disk_sources(second) == [disk.path for disk in spec.disks]


def test_ensure_domain_redefines_when_disks_change(spec: DomainSpec, tmp_path: Path) -> None:
    hypervisor.ensure_domain(DHA_1, spec)
    overlay = str(tmp_path / "root.snap-1.qcow2")
    changed = DomainSpec(
        spec.name,
        spec.uuid,
        spec.vcpus,
        spec.memory_mib,
        [DiskSpec(overlay, "vda", boot=True), spec.disks[1]],
    )

    dom = hypervisor.ensure_domain(DHA_1, changed)

    assert _disk_sources(dom) == [overlay, spec.disks[1].path]
    assert dom.UUIDString() == spec.uuid


def test_ensure_domain_renames_a_renamed_vm_once_it_is_stopped(spec: DomainSpec) -> None:
    hypervisor.start(DHA_1, spec)
    renamed = DomainSpec("renamed-" + spec.name, spec.uuid, spec.vcpus, spec.memory_mib, spec.disks)

    assert hypervisor.ensure_domain(DHA_1, renamed).name() == spec.name  # libvirt keeps a running name
    hypervisor.stop(DHA_1, renamed)
    assert hypervisor.ensure_domain(DHA_1, renamed).name() == renamed.name


def test_ensure_domain_refuses_a_name_held_by_another_domain(spec: DomainSpec) -> None:
    hypervisor.ensure_domain(DHA_1, spec)
    impostor = DomainSpec(spec.name, str(uuid.uuid4()), 1, 512, [])

    with pytest.raises(HypervisorError) as caught:
        hypervisor.ensure_domain(DHA_1, impostor)
    assert DHA_1 in str(caught.value) and spec.name in str(caught.value)


def test_start_stop_and_state(spec: DomainSpec) -> None:
    assert hypervisor.state(DHA_1, spec) == "stopped"
    assert hypervisor.start(DHA_1, spec) == "started"
    assert hypervisor.state(DHA_1, spec) == "running"
    assert hypervisor.start(DHA_1, spec) == "already_running"
    assert hypervisor.stop(DHA_1, spec, graceful_timeout=5) == "shutdown"
    assert hypervisor.state(DHA_1, spec) == "stopped"
    assert hypervisor.stop(DHA_1, spec) == "already_stopped"


def test_libvirt_error_names_host_domain_and_next_step(spec: DomainSpec) -> None:
    with pytest.raises(HypervisorError) as caught:
        hypervisor.thaw(DHA_1, spec, timeout_seconds=5)  # not running: libvirt refuses
    message = str(caught.value)
    assert DHA_1 in message and spec.name in message and spec.uuid in message
    assert "domain is not running" in message
    assert "virsh domstate" in message
    assert caught.value.code == libvirt.VIR_ERR_OPERATION_INVALID


# --- Freeze / thaw ----------------------------------------------------------------------------------------


def test_freeze_thaw_round_trip(spec: DomainSpec) -> None:
    hypervisor.start(DHA_1, spec)

    result = hypervisor.freeze(DHA_1, spec, timeout_seconds=5)
    assert (result.frozen, result.consistency, result.reason) == (True, "application", "")
    assert result.filesystems > 0
    assert hypervisor.thaw(DHA_1, spec, timeout_seconds=5) > 0
    assert hypervisor.thaw(DHA_1, spec, timeout_seconds=5) == 0  # nothing left frozen


def test_frozen_thaws_after_the_body(spec: DomainSpec) -> None:
    hypervisor.start(DHA_1, spec)

    with hypervisor.frozen(DHA_1, spec, timeout_seconds=5) as result:
        assert result.consistency == "application"

    assert hypervisor.thaw(DHA_1, spec, timeout_seconds=5) == 0


def test_frozen_thaws_when_the_body_raises(spec: DomainSpec) -> None:
    hypervisor.start(DHA_1, spec)

    with pytest.raises(RuntimeError, match="snapshot failed"):
        with hypervisor.frozen(DHA_1, spec, timeout_seconds=5) as result:
            assert result.frozen
            raise RuntimeError("snapshot failed")

    assert hypervisor.thaw(DHA_1, spec, timeout_seconds=5) == 0


def test_frozen_on_a_stopped_domain_is_crash_consistent(spec: DomainSpec) -> None:
    with hypervisor.frozen(DHA_1, spec, timeout_seconds=5) as result:
        assert (result.frozen, result.consistency, result.reason) == (False, "crash", "domain is not running")


class _HangingAgentDomain:
    """Stands in for a virDomain whose guest agent does not answer until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.thawed = threading.Event()

    def fsFreeze(self) -> int:  # noqa: N802 - libvirt's name
        self.release.wait(10)
        return 1

    def fsThaw(self) -> int:  # noqa: N802 - libvirt's name
        self.thawed.set()
        return 1


def test_unit_fake_domain_freeze_timeout_is_crash_consistent_and_late_freeze_is_thawed() -> None:
    domain = _HangingAgentDomain()
    started = time.monotonic()

    result = _freeze_domain(domain, timeout_seconds=0.2, where="fake domain")

    assert time.monotonic() - started < 1
    assert (result.frozen, result.consistency) == (False, "crash")
    assert result.reason == "guest agent not responding"
    domain.release.set()  # the agent finally answers: the freeze nobody waits for is undone
    assert domain.thawed.wait(5)


def test_unit_fake_domain_freeze_error_reports_the_libvirt_message() -> None:
    class RefusingDomain:
        def fsFreeze(self) -> int:  # noqa: N802 - libvirt's name
            raise libvirt.libvirtError("Guest agent is not responding: QEMU guest agent is not connected")

    result = _freeze_domain(RefusingDomain(), timeout_seconds=1, where="fake domain")

    assert (result.frozen, result.consistency) == (False, "crash")
    assert "QEMU guest agent is not connected" in result.reason


# --- Snapshot metadata ------------------------------------------------------------------------------------


def test_snapshot_metadata_create_list_delete(spec: DomainSpec) -> None:
    hypervisor.start(DHA_1, spec)
    overlays = {spec.disks[0].path: spec.disks[0].path + ".snap-1"}

    assert hypervisor.create_snapshot_metadata(DHA_1, spec, "snap-b", "nightly", overlays) == "snap-b"
    hypervisor.create_snapshot_metadata(DHA_1, spec, "snap-a", "before upgrade")
    hypervisor.create_snapshot_metadata(DHA_1, spec, "snap-a", "before upgrade")  # idempotent

    assert hypervisor.list_snapshot_metadata(DHA_1, spec) == ["snap-a", "snap-b"]
    dom = hypervisor.ensure_domain(DHA_1, spec)
    assert ET.fromstring(dom.snapshotLookupByName("snap-a").getXMLDesc()).findtext("description") == (
        "before upgrade"
    )
    assert hypervisor.delete_snapshot_metadata(DHA_1, spec, "snap-a") is True
    assert hypervisor.delete_snapshot_metadata(DHA_1, spec, "snap-a") is False
    assert hypervisor.list_snapshot_metadata(DHA_1, spec) == ["snap-b"]


def test_snapshot_of_a_disk_the_domain_lacks_is_refused(spec: DomainSpec) -> None:
    with pytest.raises(ValueError, match="does not have"):
        hypervisor.create_snapshot_metadata(DHA_1, spec, "snap", "", {"/elsewhere/x.qcow2": "/elsewhere/y"})


# --- XML builders -----------------------------------------------------------------------------------------


def test_qemu_domain_xml_has_guest_agent_channel_and_qcow2_drivers(spec: DomainSpec) -> None:
    root = ET.fromstring(hypervisor.domain_xml(spec, "kvm"))

    assert root.get("type") == "kvm"
    assert root.find("./devices/channel[@type='unix']/target").attrib == {
        "type": "virtio",
        "name": "org.qemu.guest_agent.0",
    }
    assert [d.find("driver").attrib for d in root.findall("./devices/disk")] == [
        {"name": "qemu", "type": "qcow2"}
    ] * 2
    assert root.find("./devices/controller[@type='scsi']").get("model") == "virtio-scsi"
    assert root.find("./devices/disk/target[@dev='vda']/../boot").get("order") == "1"


def test_test_driver_domain_xml_has_no_agent_channel(spec: DomainSpec) -> None:
    root = ET.fromstring(hypervisor.domain_xml(spec, "test"))
    assert root.get("type") == "test" and root.find("./devices/channel") is None


def test_external_snapshot_xml_overlays_only_the_named_disks(spec: DomainSpec) -> None:
    xml = hypervisor.snapshot_xml(spec, "s1", "d", {spec.disks[0].path: "/v/root.s1.qcow2"}, external=True)
    disks = {d.get("name"): d for d in ET.fromstring(xml).findall("./disks/disk")}

    assert disks["vda"].get("snapshot") == "external"
    assert disks["vda"].find("source").get("file") == "/v/root.s1.qcow2"
    assert disks["sda"].get("snapshot") == "no"


@pytest.mark.parametrize(
    "disk",
    [
        {"path": "relative.qcow2", "target_dev": "vda"},
        {"path": "/v/a.qcow2", "target_dev": "sda", "bus": "virtio"},
        {"path": "/v/a.qcow2", "target_dev": "vda", "fmt": "vmdk"},
    ],
)
def test_invalid_disk_spec_is_refused(disk: dict) -> None:
    with pytest.raises(ValueError):
        DiskSpec(**disk)
