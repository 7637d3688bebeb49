"""The spec's restore drill, run in a shell exactly as the spec writes it (its `cd` is our `clouddigit`),
while db-01's newest snapshot is a volume snapshot of its data disk: `--vm` answers the VM snapshot."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from clouddigit.compute import services as compute
from clouddigit.compute.models import VM
from policies.engine import in_scope
from snapshots import services
from snapshots.models import Restore, Snapshot
from tests.policies.test_scheduler import _policy
from tests.worker import created

SCRIPT = Path(sys.executable).parent / "clouddigit"

# From the spec's "Restore drills" (product/seed-snapshots-and-custom-images.txt), character for character.
RECIPE = """\
SNAP=$(cd compute snapshot list --vm db-01 --latest 1 -o id)
cd compute vm restore \\
  --snapshot $SNAP \\
  --name db-01-restored-$(date +%F) \\
  --vpc sandbox-vpc
"""


@pytest.mark.django_db(transaction=True)
def test_the_spec_drill_recipe_runs_verbatim(live_server, alice, make_vm, prod, dha):
    policy = _policy(prod)
    db01 = make_vm(prod, "db-01", tags={"env": "prod", "role": "db"})
    data = created(
        compute.create_volume(actor=None, project=prod, region=dha, name="db-01-data", size_bytes=2**24)
    )
    compute.attach_volume(actor=None, volume=data, vm=db01, device="vdb")
    vm_snapshot = services.create_snapshot(actor=None, vm=VM.objects.get(pk=db01.pk), name="db-01-nightly")
    # Newer, and db-01's too: a volume snapshot of its data disk, which `vm restore` cannot take.
    services.create_snapshot(actor=None, volume=data, name="db-01-data-hourly")
    assert Snapshot.objects.order_by("-created_at").first().kind == Snapshot.Kind.VOLUME

    env = {name: value for name, value in os.environ.items() if not name.startswith("CLOUDDIGIT_")}
    env |= {
        "PATH": f"{SCRIPT.parent}:{env['PATH']}",
        "CLOUDDIGIT_URL": live_server.url,
        "CLOUDDIGIT_TOKEN": Token.objects.create(user=alice).key,
    }
    script = 'set -euo pipefail\ncd() { clouddigit "$@"; }\n' + RECIPE + 'echo "snap=$SNAP"\n'
    shell = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False
    )

    assert shell.returncode == 0, shell.stderr
    restore_line, snap_line = shell.stdout.splitlines()
    assert snap_line == f"snap={vm_snapshot.pk}"
    name = f"db-01-restored-{datetime.date.today():%Y-%m-%d}"
    restore = Restore.objects.get(pk=restore_line.split()[0])
    assert (restore.name, restore.state, restore.kind) == (name, Restore.State.DONE, Restore.Kind.VM)
    restored = VM.objects.get(name=name)
    assert (restored.vpc, restored.state) == ("sandbox-vpc", VM.State.RUNNING)
    # A sandbox restore of a prod VM does not fall under the prod policy, and says why on stderr.
    assert restored.tags["role"] == "db" and "env" not in restored.tags
    assert restored not in in_scope(policy)
    assert "env=prod not kept: it would put this VM under policy acme-prod-default" in shell.stderr
