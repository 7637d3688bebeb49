"""`manage.py demo`: the demo accounts, users, VMs and volumes. Idempotent: run it as often as you like.

Passwords are made once per data folder and kept in <var>/demo-logins.json, so a second run prints
the same logins.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from clouddigit.backends import volumes as volume_files
from clouddigit.compute import services, tasks
from clouddigit.compute.models import VM, Account, Project, Region, Volume
from iam.models import AccountMember, RoleBinding
from iam.services import add_member, grant_role
from images import services as images
from images.models import Image
from policies.models import Policy
from policies.services import apply_policy
from snapshots.models import Snapshot
from snapshots.services import create_snapshot

GiB = 2**30
MiB = 2**20

ACCOUNTS = {"acme": "Acme Corp", "globex": "Globex Inc"}
PROJECTS = [("acme", "prod", "Production"), ("acme", "sandbox", "Sandbox"), ("globex", "main", "Main")]

# username -> (what the login is for, role, "account" or "account/project"); no role: a user of the
# account who waits for a grant
USERS = {
    "acme-admin": ("account admin of acme", "account.admin", "acme"),
    "prod-publisher": ("image publisher in acme/prod", "image.publisher", "acme/prod"),
    "prod-operator": ("snapshot operator in acme/prod", "snapshot.operator", "acme/prod"),
    "prod-attestor": ("CIS attestor in acme/prod: signs images", "image.cis-attestor", "acme/prod"),
    "auditor": ("auditor of acme (read-only)", "auditor", "acme"),
    "globex-user": ("outsider: admin of the globex account", "account.admin", "globex"),
    "new-hire": ("user of acme with no role yet: grant one on the IAM page", None, "acme"),
}


@dataclass(frozen=True)
class DemoVM:
    project: str
    region: str
    name: str
    flavor: str
    vpc: str
    boot_gib: int
    tags: dict
    guest_agent: str = "running"
    running: bool = True
    data_volumes: tuple = ()  # (name, GiB, MiB of data written)


PROD = {"env": "prod"}
PROD_POLICY = """\
name: acme-prod-default
schedule:
  daily: 02:00 BDT
  weekly: Sun 03:00 BDT
retention:
  daily: 7
  weekly: 4
scope:
  vm_tags: ['env=prod']
application_consistent: true
"""
VMS = [
    DemoVM(
        "acme/prod",
        "bd-dha-1",
        "db-01",
        "std-4x8",
        "prod-vpc",
        20,
        {**PROD, "role": "db"},
        data_volumes=(("db-01-data", 100, 64),),
    ),
    DemoVM(
        "acme/prod", "bd-dha-1", "web-01", "std-2x4", "prod-vpc", 10, {**PROD, "role": "web"}, running=False
    ),
    DemoVM(
        "acme/prod",
        "bd-dha-1",
        "web-02",
        "std-2x4",
        "prod-vpc",
        10,
        {**PROD, "role": "web"},
        guest_agent="not-running",
    ),
    DemoVM("acme/prod", "bd-ctg-1", "batch-01", "bm-c1", "prod-vpc", 40, {**PROD, "role": "batch"}),
    DemoVM(
        "acme/sandbox",
        "bd-dha-1",
        "dev-01",
        "std-1x2",
        "sandbox-vpc",
        10,
        {"env": "dev"},
        guest_agent="not-installed",
    ),
    DemoVM("globex/main", "bd-dha-1", "gx-app-01", "std-2x4", "globex-vpc", 10, PROD),
]


# (slot, name, os-family, cis-level, OpenSCAP score): blank placeholder disks, published in every region.
PLATFORM_IMAGES = [
    ("stock", "ubuntu-24.04", "ubuntu", "", None),
    ("stock", "debian-12", "debian", "", None),
    ("stock", "rocky-9", "rocky", "", None),
    ("stock", "alma-9", "alma", "", None),
    ("stock", "windows-server-2025", "windows", "", None),
    ("hardened", "cis-ubuntu-24.04", "ubuntu", "1", 94.2),
    ("hardened", "cis-rocky-9", "rocky", "2", 91.7),
]
PLACEHOLDER = (
    "Demo placeholder: a blank disk with no operating system. Publish real builds with publish_image."
)


class Command(BaseCommand):
    help = "Create the demo accounts, users, VMs and volumes (idempotent)."

    def handle(self, *args, **options):
        services.sync_regions()
        passwords = self._passwords()
        with transaction.atomic():
            accounts = {
                slug: Account.objects.get_or_create(slug=slug, defaults={"name": name})[0]
                for slug, name in ACCOUNTS.items()
            }
            projects = {
                f"{account}/{slug}": Project.objects.get_or_create(
                    account=accounts[account], slug=slug, defaults={"name": name}
                )[0]
                for account, slug, name in PROJECTS
            }
            users = {
                name: self._user(name, passwords[name], role, target, accounts, projects)
                for name, (_, role, target) in USERS.items()
            }
        for spec in VMS:
            project = projects[spec.project]
            actor = users["globex-user" if project.account.slug == "globex" else "acme-admin"]
            self._vm(actor, project, Region.objects.get(slug=spec.region), spec)
        self._loose_volume(users["acme-admin"], projects["acme/prod"])
        self._first_snapshot(users["acme-admin"], projects["acme/prod"])
        self._prod_policy(users["acme-admin"], projects["acme/prod"])
        self._images(users["prod-publisher"], projects["acme/prod"])
        self.stdout.write(self.style.SUCCESS("Demo data is in place. Logins:"))
        for name, (purpose, _, _) in USERS.items():
            self.stdout.write(f"  {name:15} {passwords[name]:22} {purpose}")

    def _prod_policy(self, actor, project: Project) -> None:
        """The spec's policy: it covers the VMs tagged env=prod (a restored VM keeps that tag only when
        asked to). Its notification channel is left out: the demo has none."""
        if not Policy.objects.filter(project=project, name="acme-prod-default").exists():
            apply_policy(actor=actor, project=project, text=PROD_POLICY)

    def _passwords(self) -> dict[str, str]:
        path = settings.VAR_DIR / "demo-logins.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        for name in USERS:
            saved.setdefault(name, secrets.token_urlsafe(12))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved, indent=2))
        path.chmod(0o600)
        return saved

    def _user(self, name, password, role, target, accounts, projects):
        user, created = get_user_model().objects.get_or_create(username=name)
        if created or not user.check_password(password):
            user.set_password(password)
            user.save()
        account_slug, _, _ = target.partition("/")
        account, project = accounts[account_slug], projects.get(target)
        if role is None:
            if not AccountMember.objects.filter(account=account, user=user).exists():
                add_member(actor=None, account=account, username=name)
            return user
        bound = RoleBinding.objects.filter(user=user, role=role, account=account, project=project).exists()
        if not bound:
            grant_role(actor=None, role=role, account=account, project=project, username=name)
        return user

    def _vm(self, actor, project: Project, region: Region, spec: DemoVM) -> VM:
        vm = VM.objects.filter(project=project, region=region, name=spec.name).first()
        if vm is not None:
            return vm
        vm = services.create_vm(
            actor=actor,
            project=project,
            region=region,
            name=spec.name,
            flavor=spec.flavor,
            vpc=spec.vpc,
            boot_size_bytes=spec.boot_gib * GiB,
            tags=spec.tags,
            guest_agent=spec.guest_agent,
        )
        # The demo runs before the worker starts: it does the worker's step itself, so it can write
        # sample data into the new files (the queued step then finds nothing left to do).
        tasks.finish_create_vm(str(vm.pk))
        vm.refresh_from_db()
        volume_files.write_pattern(vm.volumes.get().path, 0, 4 * MiB, 0x42)
        for index, (name, size_gib, written_mib) in enumerate(spec.data_volumes):
            volume = services.create_volume(
                actor=actor,
                project=project,
                region=region,
                name=name,
                size_bytes=size_gib * GiB,
                tags=spec.tags,
            )
            tasks.finish_create_volume(str(volume.pk))
            volume.refresh_from_db()
            volume_files.write_pattern(volume.path, 0, written_mib * MiB, 0x61 + index)
            services.attach_volume(actor=actor, volume=volume, vm=vm, device=f"vd{chr(ord('b') + index)}")
        if spec.running:
            services.start_vm(actor=actor, vm=vm)
        self.stdout.write(f"  created VM {project}/{spec.name} in {region}")
        return vm

    def _first_snapshot(self, actor, project):
        """One VM snapshot of db-01, taken by the worker once it runs (after db-01 has started)."""
        vm = VM.objects.get(project=project, name="db-01")
        if not Snapshot.objects.filter(vm=vm).exists():
            create_snapshot(actor=actor, vm=vm, name="db-01-first", tags={"purpose": "demo"})

    def _loose_volume(self, actor, project):
        region = Region.objects.get(slug="bd-dha-1")
        if not Volume.objects.filter(project=project, region=region, name="scratch-01").exists():
            volume = services.create_volume(
                actor=actor,
                project=project,
                region=region,
                name="scratch-01",
                size_bytes=50 * GiB,
                tags={"env": "prod", "owner": "data-team"},
            )
            tasks.finish_create_volume(str(volume.pk))

    def _images(self, publisher, project):
        """The stock and hardened catalogue, plus two custom images of acme/prod (one deprecated). They
        become Available once the worker has stored them."""
        with tempfile.TemporaryDirectory(prefix="clouddigit-demo-") as scratch:
            for index, (slot, name, family, level, score) in enumerate(PLATFORM_IMAGES):
                path = self._blank_disk(Path(scratch) / f"{name}.qcow2", 0x30 + index)
                for region in Region.objects.all():
                    if not Image.objects.filter(project=None, region=region, name=name).exists():
                        images.publish_platform_image(
                            slot=slot,
                            region=region,
                            name=name,
                            path=path,
                            declared_format="qcow2",
                            description=PLACEHOLDER,
                            tags={"os-family": family, **({"cis-level": level} if level else {})},
                            openscap_score=score,
                        )
            region = Region.objects.get(slug="bd-dha-1")
            for name, deprecated in [("golden-web-2026-10", True), ("golden-web-2026-11", False)]:
                if Image.objects.filter(project=project, region=region, name=name).exists():
                    continue
                path = self._blank_disk(Path(scratch) / f"{name}.qcow2", 0x50)
                image = images.start_import(
                    actor=publisher,
                    project=project,
                    region=region,
                    name=name,
                    declared_format="qcow2",
                    description="Web tier golden image (demo: blank disk)",
                    tags={"os-family": "ubuntu"},  # cis-level left out: the checklist flags it
                )
                with path.open("rb") as stream:
                    images.receive_upload(
                        actor=publisher, image=image, stream=stream, length=path.stat().st_size
                    )
                if deprecated:
                    images.deprecate_image(actor=publisher, image=image, note="Use golden-web-2026-11.")
        self.stdout.write("  published the image catalogue")

    def _blank_disk(self, path: Path, marker: int) -> Path:
        volume_files.create(path, 2 * GiB)
        volume_files.write_pattern(path, 0, MiB, marker)
        return path
