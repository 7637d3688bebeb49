"""Fast checks of the live-chain adapter functions that need no qemu: the test driver's answers and the
rule that decides which layers a block job removes. (Not slow; kept beside test_real_qemu.py, which
covers the same functions on real qemu. They belong in tests/backends/ when that file is free.)"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from clouddigit.backends import hypervisor
from clouddigit.backends.hypervisor import DiskSpec, DomainSpec, HypervisorError
from clouddigit.backends.hypervisor.live import _merged_layers

HOSTS_DIR = Path(__file__).resolve().parents[2] / "clouddigit" / "backends" / "hosts"
DHA_1 = f"test://{HOSTS_DIR / 'bd-dha-1-host-1.xml'}"


def test_the_test_driver_sends_every_chain_change_to_qemu_img(tmp_path: Path) -> None:
    vm_uuid = str(uuid.uuid4())
    root = str(tmp_path / "root.qcow2")
    spec = DomainSpec(f"vm-{vm_uuid[:8]}", vm_uuid, 1, 512, [DiskSpec(root, "vda", boot=True)])
    assert hypervisor.live_overlays_supported(DHA_1, spec) is False
    hypervisor.start(DHA_1, spec)
    assert hypervisor.live_overlays_supported(DHA_1, spec) is False  # running, but no qemu
    with pytest.raises(HypervisorError, match="test driver runs no qemu"):
        hypervisor.create_live_overlays(DHA_1, spec, {root: str(tmp_path / "overlay.qcow2")})
    with pytest.raises(HypervisorError, match="test driver runs no qemu"):
        hypervisor.pull_into_active(DHA_1, spec, "vda", base=None)
    with pytest.raises(HypervisorError, match="test driver runs no qemu"):
        hypervisor.commit_into_base(DHA_1, spec, "vda", top=root, base=root)
    with pytest.raises(ValueError, match="does not have"):
        hypervisor.create_live_overlays(DHA_1, spec, {"/elsewhere.qcow2": str(tmp_path / "o.qcow2")})


CHAIN = ["/v/active", "/v/s3", "/v/s2", "/v/s1"]


@pytest.mark.parametrize(
    ("top", "base", "merged"),
    [
        (None, "/v/s2", ["/v/s3"]),  # pull the newest layer into the active one
        (None, "/v/s3", []),  # already pulled
        (None, None, ["/v/s3", "/v/s2", "/v/s1"]),  # flatten
        (None, "/v/active", None),  # the active layer cannot be its own base
        (None, "/v/gone", None),  # base not in the chain
        ("/v/s3", "/v/s2", ["/v/s3"]),  # commit a middle layer
        ("/v/s3", "/v/s1", ["/v/s3", "/v/s2"]),
        ("/v/gone", "/v/s2", []),  # already committed (top gone, base still there)
        ("/v/active", "/v/s3", None),  # an active commit: not offered
        ("/v/s1", "/v/s2", None),  # top below base
    ],
)
def test_which_layers_a_block_job_removes(
    top: str | None, base: str | None, merged: list[str] | None
) -> None:
    assert _merged_layers(CHAIN, top, base) == merged
