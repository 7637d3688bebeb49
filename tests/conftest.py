"""Fixtures every test module may use: the three people of every permission test, the inventory, and
Celery running tasks in-process (tests that need a real worker start one themselves)."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from clouddigit import outbound
from clouddigit.backends import volumes as volume_files
from clouddigit.celery import app as celery_app
from clouddigit.compute import services as compute_services
from iam.services import grant_role
from tests.worker import created

pytest_plugins = ["tests.plugins.parallel", "tests.plugins.seaweed"]

GiB = 2**30


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a server the test needs is not running, except in CI, where that is a failure."""
    with socket.socket() as sock:
        sock.settimeout(1)
        if sock.connect_ex((host, port)) == 0:
            return
    message = f"{name} does not answer on {host}:{port}"
    if os.environ.get("CLOUDDIGIT_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def redis_broker_url() -> str:
    """An empty Redis database for a test's real broker. Each xdist worker has its own, counting down
    from CLOUDDIGIT_TEST_REDIS_DB (default 13; .ci/run's in-process broker is 15): a worker process
    started by one xdist worker must never take the tasks another one published."""
    import redis

    from tests.plugins.parallel import worker_index

    require_service("Redis", "127.0.0.1", 6379)
    url = f"redis://127.0.0.1:6379/{int(os.environ.get('CLOUDDIGIT_TEST_REDIS_DB', '13')) - worker_index()}"
    redis.Redis.from_url(url).flushdb()  # no message left from an earlier test or run
    return url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Benchmarks (`bench`: over a minute, they print figures rather than check behaviour) and the `long`
    tests (minutes each; .ci/run runs them) run only when `-m` names their marker (`-m bench`,
    `-m long`, `-m "long or not bench"`). Any other selection (none, `-m "not e2e"`, a path) leaves them
    out."""
    for marker in ("bench", "long"):
        if marker in (config.option.markexpr or ""):
            continue
        left_out = [item for item in items if item.get_closest_marker(marker)]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [item for item in items if not item.get_closest_marker(marker)]


@pytest.fixture(autouse=True)
def _eager_celery():
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# Where the test resolver puts names under the reserved .example and .test domains: a public address, so
# they pass the outbound check. Tests only add such channels; nothing is ever sent there.
PUBLIC_ADDRESS = "93.184.215.14"


@pytest.fixture(autouse=True)
def dns(monkeypatch):
    """The outbound client's resolver, for tests: the machine's resolver is off this machine. Address
    literals (in any spelling getaddrinfo takes) resolve as they are, localhost to loopback, .example
    and .test names to PUBLIC_ADDRESS; a test maps other names with dns["name"] = ["address", ...]."""
    names: dict[str, list[str]] = {"localhost": ["127.0.0.1", "::1"]}

    def resolve(host: str, port: int) -> list[str]:
        if host in names:
            return list(names[host])
        if host.removesuffix(".").endswith((".example", ".test")):
            return [PUBLIC_ADDRESS]
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        return [info[4][0] for info in infos]

    monkeypatch.setattr(outbound, "resolve", resolve)
    return names


@pytest.fixture(autouse=True)
def _static_files_from_source(settings):
    """Pages link static files by their source names: tests do not run collectstatic."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def regions(db, tmp_path):
    """Both regions, with their volume folders in the test's temporary folder."""
    from clouddigit.compute.models import Region
    from clouddigit.compute.services import sync_regions

    sync_regions()
    for region in Region.objects.all():
        region.volume_dir = str(tmp_path / "volumes" / region.slug)
        region.save()
    return {region.slug: region for region in Region.objects.all()}


@pytest.fixture
def dha(regions):
    return regions["bd-dha-1"]


@pytest.fixture
def ctg(regions):
    return regions["bd-ctg-1"]


@pytest.fixture
def acme(db):
    from clouddigit.compute.models import Account

    return Account.objects.create(slug="acme", name="Acme Corp")


@pytest.fixture
def globex(db):
    from clouddigit.compute.models import Account

    return Account.objects.create(slug="globex", name="Globex Inc")


@pytest.fixture
def prod(acme):
    from clouddigit.compute.models import Project

    return Project.objects.create(account=acme, slug="prod", name="Production")


@pytest.fixture
def sandbox(acme):
    from clouddigit.compute.models import Project

    return Project.objects.create(account=acme, slug="sandbox", name="Sandbox")


@pytest.fixture
def globex_main(globex):
    from clouddigit.compute.models import Project

    return Project.objects.create(account=globex, slug="main", name="Main")


def _user_with_role(django_user_model, name: str, role: str, account, project=None):
    user = django_user_model.objects.create_user(name, password=f"{name}-pass")
    grant_role(actor=None, role=role, account=account, project=project, username=name)
    return user


@pytest.fixture
def alice(django_user_model, acme):
    """The owner: account admin of acme."""
    return _user_with_role(django_user_model, "alice", "account.admin", acme)


@pytest.fixture
def bob(django_user_model, acme, prod):
    """A member with a granted role: image publisher in acme/prod only."""
    return _user_with_role(django_user_model, "bob", "image.publisher", acme, prod)


@pytest.fixture
def charlie(django_user_model, globex):
    """An outsider: admin of another account."""
    return _user_with_role(django_user_model, "charlie", "account.admin", globex)


@pytest.fixture
def make_vm(dha):
    """VMs made by the system (actor=None), as an operator's script would, and created by the worker
    (in this process): stopped, with their boot volume's file."""
    from clouddigit.compute import services

    def make(project, name="vm-1", *, region=None, flavor="std-2x4", tags=None, boot_gib=1, **extra):
        vm = services.create_vm(
            actor=None,
            project=project,
            region=region or dha,
            name=name,
            flavor=flavor,
            vpc="test-vpc",
            boot_size_bytes=boot_gib * GiB,
            tags=tags or {},
            **extra,
        )
        return created(vm)

    return make


MiB = 2**20


@pytest.fixture
def run(django_capture_on_commit_callbacks):
    """Run a service and the tasks it queues (eagerly, in this process), as a worker would."""

    def call(service, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            result = service(**kwargs)
        if hasattr(result, "refresh_from_db") and type(result).objects.filter(pk=result.pk).exists():
            result.refresh_from_db()  # what the tasks wrote
        return result

    return call


@pytest.fixture
def operator(django_user_model, prod):
    django_user_model.objects.create_user("olga")
    grant_role(actor=None, role="snapshot.operator", account=prod.account, project=prod, username="olga")
    return django_user_model.objects.get(username="olga")


@pytest.fixture
def snap_admin(django_user_model, prod):
    django_user_model.objects.create_user("sam")
    grant_role(actor=None, role="snapshot.admin", account=prod.account, project=prod, username="sam")
    return django_user_model.objects.get(username="sam")


@pytest.fixture
def data_volume(prod, dha):
    volume = created(
        compute_services.create_volume(
            actor=None, project=prod, region=dha, name="data-01", size_bytes=16 * MiB
        )
    )
    volume_files.write_pattern(volume.path, 0, 4 * MiB, 0x11)
    return volume


@pytest.fixture
def image_stores(settings, seaweed, regions):
    """Each region's object store is a fresh bucket on the test SeaweedFS server (a real S3)."""
    stores = {}
    for slug in regions:
        store = seaweed.store()
        settings.REGIONS = {
            **settings.REGIONS,
            slug: {
                **settings.REGIONS[slug],
                "s3_endpoint": seaweed.endpoint,
                "s3_bucket": store.bucket,
                "s3_access_key": seaweed.access_key,
                "s3_secret_key": seaweed.secret_key,
            },
        }
        stores[slug] = store
    return stores


@pytest.fixture
def qcow2_file(tmp_path):
    """A small real qcow2 image with 1 MiB of data written at the start."""

    def make(name="disk.qcow2", size="64M", pattern=0xAB):

        path = tmp_path / name
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
        volume_files.write_pattern(path, 0, MiB, pattern)
        return path

    return make


@pytest.fixture
def dana(django_user_model, acme, prod):
    """A CIS attestor in acme/prod."""
    django_user_model.objects.create_user("dana")
    grant_role(actor=None, role="image.cis-attestor", account=acme, project=prod, username="dana")
    return django_user_model.objects.get(username="dana")


@pytest.fixture
def key_pair():
    """An Ed25519 key pair made as the CLI makes it: (private PEM, public raw base64)."""
    from images import attestation

    return attestation.generate_key_pair()


@pytest.fixture
def dana_key(dana, acme, key_pair):
    from images import attestation

    return attestation.register_key(actor=dana, account=acme, name="dana-laptop", public_key=key_pair[1])


@pytest.fixture
def cis_image(prod, dha):
    """An available custom image tagged cis-level=1, ready to be signed."""
    import hashlib

    from images.models import Image

    return Image.objects.create(
        project=prod,
        region=dha,
        name="web-cis",
        state=Image.State.AVAILABLE,
        sha256=hashlib.sha256(b"web-cis").hexdigest(),
        tags={"cis-level": "1"},
        created_by="t",
    )


@pytest.fixture
def golden(prod, dha):
    """An available custom image of acme/prod, as a row only (no bytes stored)."""
    from images.models import Image

    return Image.objects.create(
        project=prod, region=dha, name="golden", created_by="alice", state=Image.State.AVAILABLE
    )
