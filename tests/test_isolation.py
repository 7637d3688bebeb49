"""Walks every console URL and every API endpoint, found in the URL conf, as four people:

- anonymous: sent to the login page (console) or answered 401 (API);
- alice, admin of acme: reads succeed for some acme object, and her writes are not refused (so a view
  that refuses everyone fails);
- charlie, admin of globex: never sees acme — 404 for acme objects, acme absent from every list;
- bob, a publisher in acme/prod: every write is refused (4xx, or a refusal in the audit log).

A new view is covered without anyone adding it here; if no acme object makes it answer, the test says so.
One test per URL pattern and person, so one failure does not hide the others.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.urls import get_resolver, reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from clouddigit.audit.models import AuditEntry
from clouddigit.compute import services as compute_services
from clouddigit.compute.models import Account, Project, Region
from clouddigit.errors import PermissionRefused
from iam.models import RoleBinding
from iam.services import grant_role
from images import attestation
from images.models import Image
from policies import channels as policy_channels
from policies import services as policy_services
from policies.models import Drill
from snapshots import services as snapshot_services
from snapshots import work as snapshot_work
from snapshots.models import Snapshot
from tests.worker import created

# Public by design, or changing nothing but the caller's own session (the project/region switcher,
# which ignores projects the caller cannot see: tests/compute/test_pages.py).
SKIPPED = {"login", "logout", "api:token", "switch-scope", "metrics"}
# `metrics`: platform staff or the scrape token only, 404 to anyone else
# (tests/snapshots/test_replication_pages.py).
# Endpoints that need a query: it names an acme project, which the outsider must be refused (400).
QUERIES = {
    "api:image-picker": "?project=acme/prod&region=bd-dha-1",
    "api:image-why-missing": "?project=acme/prod&region=bd-dha-1&image=acme-golden",
    "api:storage-quota-usage": "?project=acme/prod",
    "api:replication-list": "?project=acme/prod",
}
# Console forms that name their project in the body: every person's write names an acme project.
BODIES = {
    "images:raise-limit": {"project": "acme/prod"},
    "images:policy-set": {"project": "acme/prod"},
}
SKIPPED_NAMESPACES = {"admin"}  # Django's admin has its own staff-only login
OK = {200, 286}
# What the permitted user's write may answer: done (2xx/3xx), or bad input or a state the object is not
# in (400/409/422). Refusals (403, 404, 405) and server errors are not among them.
PERMITTED = set(range(200, 400)) | {400, 409, 422}
ACME_POLICY = """\
name: acme-nightly
schedule:
  daily: 02:00 BDT
retention:
  daily: 7
scope:
  vm_tags: ['env=prod']
"""


def _named_patterns(resolver=None, namespace=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if hasattr(entry, "url_patterns"):
            child = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            if (entry.namespace or "") in SKIPPED_NAMESPACES:
                continue
            yield from _named_patterns(entry, child)
        elif entry.name:
            params = list(entry.pattern.regex.groupindex)
            if "format" not in params:
                yield f"{namespace}{entry.name}", params, entry.callback


def _methods(callback, answers_get: bool, allow: str) -> list[str]:
    """A DRF viewset says which methods it routes; a console view is read-only unless it refuses GET,
    then its 405 says which methods it takes (`allow`)."""
    actions = getattr(callback, "actions", None)
    if actions:
        return sorted(set(actions) - {"head", "options", "put", "patch"})
    if answers_get:
        return ["get"]
    return sorted({method.strip().lower() for method in allow.split(",")} - {"get", "head", "options", ""})


def _parent(url: str) -> str:
    """`/images/<pk>/share/` -> `/images/<pk>/`: the page of the object a write acts on."""
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[0] + "/"


def _write_targets(urls: list[str], reachable: list[str], parent_answers) -> list[str]:
    """The URLs a write is tried on: those naming an object alice can open (the URL itself, else its
    parent page); only when none does, all of them. A value of the wrong kind is a 404 for everyone
    and proves nothing."""
    return reachable or [url for url in urls if parent_answers(url)] or urls


def _answers(response) -> bool:
    return response.status_code in OK or (
        response.status_code == 302 and "/login/" not in response["Location"]
    )


GiB = 2**30


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    """Built once for the module, in a transaction rolled back at its end. Each test runs in a savepoint
    of it (pytest-django's `db`), so what one test writes the next does not see."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield _build_world(tmp_path_factory.mktemp("isolation"))
        transaction.set_rollback(True)


def _person(name: str, role: str, account, project=None):
    user = get_user_model().objects.create_user(name)
    grant_role(actor=None, role=role, account=account, project=project, username=name)
    return user


def _build_world(folder):
    regions = {region.slug: region for region in compute_services.sync_regions()}
    for region in regions.values():
        region.volume_dir = str(folder / region.slug)
        region.save()
    dha = regions["bd-dha-1"]
    acme = Account.objects.create(slug="acme", name="Acme Corp")
    globex = Account.objects.create(slug="globex", name="Globex Inc")
    prod = Project.objects.create(account=acme, slug="prod", name="Production")
    sandbox = Project.objects.create(account=acme, slug="sandbox", name="Sandbox")
    globex_main = Project.objects.create(account=globex, slug="main", name="Main")
    alice = _person("alice", "account.admin", acme)  # the owner
    bob = _person("bob", "image.publisher", acme, prod)  # a member, in acme/prod only
    charlie = _person("charlie", "account.admin", globex)  # an outsider

    def make_vm(project, name, tags=None):
        return created(
            compute_services.create_vm(
                actor=None,
                project=project,
                region=dha,
                name=name,
                flavor="std-2x4",
                vpc="test-vpc",
                boot_size_bytes=GiB,
                tags=tags or {},
            )
        )

    db01 = make_vm(prod, "db-01", tags={"env": "prod"})
    make_vm(sandbox, "dev-01")
    make_vm(globex_main, "gx-app-01")
    snapshot = snapshot_services.create_snapshot(actor=None, vm=db01, name="db-01-nightly")
    snapshot_work.take(str(snapshot.pk))
    restore = snapshot_services.restore_to_volume(
        actor=None, snapshot=Snapshot.objects.get(pk=snapshot.pk), name="db-01-copy"
    )
    snapshot_work.finish_restore(str(restore.pk))
    acme_ids = [str(db01.pk), str(db01.volumes.get().pk), str(prod.pk), str(sandbox.pk)]
    policy = policy_services.apply_policy(actor=None, project=prod, text=ACME_POLICY)
    # Failed: the one state in which it may be retried and deleted.
    drill = Drill.objects.create(
        policy=policy,
        project=prod,
        vm=db01,
        vm_name=db01.name,
        snapshot=snapshot,
        snapshot_name=snapshot.name,
        requested_by="alice",
        state=Drill.State.FAILED,
        error="the sandbox VM did not boot",
    )
    channel = policy_channels.create_channel(
        actor=None, project=prod, name="acme-alerts", kind="email", target="ops@acme.example"
    )
    # Alice (account admin) may register a signing key: the signing-key views need one to show.
    signing_key = attestation.register_key(
        actor=alice, account=prod.account, name="acme-signer", public_key=attestation.generate_key_pair()[1]
    )
    acme_ids.append(str(signing_key.pk))
    # In sandbox, where bob (an image publisher in prod only) may change nothing.
    image = Image.objects.create(
        project=sandbox, region=dha, name="acme-golden", state=Image.State.AVAILABLE, created_by="alice"
    )
    acme_ids += [str(snapshot.pk), str(restore.pk), str(policy.pk), str(channel.pk), str(image.pk)]
    acme_ids.append(str(drill.pk))
    acme_ids += [
        str(pk) for pk in RoleBinding.objects.filter(account=prod.account).values_list("pk", flat=True)
    ]
    entries = [
        str(pk) for pk in AuditEntry.objects.filter(account=prod.account).values_list("pk", flat=True)[:3]
    ]
    acme_values = acme_ids + entries + ["alice", "bob"]
    return {
        "people": {"alice": alice, "anonymous": None, "outsider": charlie, "member": bob},
        # What alice's GETs found, the same in every test (the world is): see _walk.
        "seen": {},
        "walks": {},
        "values": acme_values + list(Region.objects.values_list("slug", flat=True)),  # regions are shared
        "acme_values": acme_values,
        # Names, not ids: the outsider's own refused requests (in its audit view) echo the ids it tried.
        "acme_markers": ["db-01", "dev-01", "acme/prod", "acme/sandbox", "db-01-nightly", "acme-nightly"]
        + ["acme-alerts", "ops@acme.example", "acme-signer", "acme-golden"],
    }


def _urls(name: str, params: list[str], values: list[str]):
    if not params:
        yield reverse(name)
        return
    for combination in itertools.product(values, repeat=len(params)):
        try:
            yield reverse(name, kwargs=dict(zip(params, combination, strict=True)))
        except Exception:  # noqa: BLE001  (a value that does not fit the converter)
            continue


def _client(user, api: bool):
    client = APIClient()
    if user is not None:
        if api:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        else:
            client.force_login(user)
    return client


@dataclass
class Walk:
    """One URL pattern as the walk sees it: the URLs the test values make, those alice can open, and the
    methods it answers."""

    name: str
    api: bool
    urls: list[str]
    reachable: list[str]
    methods: list[str]
    targets: list[str]  # where a write is tried


def _walk(world, name: str, params: list[str], callback) -> Walk:
    """Found once per module with alice's GETs (remembered: parents are asked for many write URLs)."""
    if name in world["walks"]:
        return world["walks"][name]
    seen = world["seen"]  # url -> (alice's GET answers, the Allow header of a 405)

    def get(url: str) -> tuple[bool, str]:
        if url not in seen:
            response = _client(world["people"]["alice"], api).get(url)
            seen[url] = (_answers(response), response.get("Allow", "POST"))
        return seen[url]

    api = name.startswith("api:")
    urls = [url + QUERIES.get(name, "") for url in _urls(name, params, world["values"])]
    assert urls, f"{name}: no test value fits its URL parameters {params}"
    reachable = [url for url in urls if get(url)[0]]
    methods = _methods(callback, answers_get=bool(reachable), allow=get(urls[0])[1])
    targets = _write_targets(urls, reachable, lambda url: get(_parent(url))[0])
    world["walks"][name] = Walk(name, api, urls, reachable, methods, targets)
    return world["walks"][name]


def _read(world, walk: Walk, actor: str) -> None:
    # Alice: some acme object makes the page answer.
    assert walk.reachable, f"{walk.name}: alice got no 200 for any acme object; add one to the world fixture"
    url = walk.reachable[0]
    response = _client(world["people"][actor], walk.api).get(url)
    if actor == "alice":
        assert _answers(response), f"{url}: alice got {response.status_code}"
    elif actor == "anonymous":
        if walk.api:
            assert response.status_code == 401, f"{url}: anonymous got {response.status_code}"
        else:
            assert response.status_code == 302 and "/login/" in response["Location"], url
    elif response.status_code == 302:
        return  # a redirect (home) shows nothing itself
    elif walk.name in QUERIES:
        assert response.status_code == 400, f"{url}: the outsider got {response.status_code}"
    elif any(f"/{value}/" in url for value in world["acme_values"]):
        assert response.status_code == 404, f"{url}: the outsider got {response.status_code}"
    else:
        assert response.status_code in OK, url
        body = b"".join(response.streaming_content) if response.streaming else response.content
        for marker in world["acme_markers"]:
            assert marker.encode() not in body, f"{url}: the outsider sees {marker}"


def _write(world, walk: Walk, method: str, actor: str, permission_refusals: list) -> None:
    person = world["people"][actor]
    permitted = []
    for url in walk.targets:
        before = 0 if person is None else _refusals(person)
        del permission_refusals[:]
        # Each write in a savepoint of its own: alice's first write (a revoke, a delete) must not change
        # what her next one finds.
        with transaction.atomic():
            # As htmx posts a destructive form once its dialog is answered (clouddigit.console.act).
            body = {"confirmed": "yes", **BODIES.get(walk.name, {})}
            response = getattr(_client(person, walk.api), method)(url, body)
            refused = person is not None and _refusals(person) > before
            transaction.set_rollback(True)
        if actor == "anonymous":
            if walk.api:
                assert response.status_code == 401, f"{method} {url}: anonymous got {response.status_code}"
            else:
                assert response.status_code == 302 and "/login/" in response["Location"], url
        elif actor == "alice":
            assert response.status_code < 500, f"{method.upper()} {url} as alice: {response.status_code}"
            if response.status_code not in {401, 403, 404, 405} and not permission_refusals:
                permitted.append(url)
        else:
            assert 400 <= response.status_code < 500 or refused, (
                f"{method.upper()} {url} as {person.username}: {response.status_code}, no refusal"
            )
    # Alice may: her request (with no body, often) is answered, or told what is wrong with its input or
    # with the object's state, but not refused. A view that refuses everyone fails here.
    assert actor != "alice" or permitted, (
        f"{method.upper()} {walk.name}: alice was refused on every URL tried: {walk.targets}"
    )


@pytest.fixture
def permission_refusals(monkeypatch):
    """Every PermissionRefused made while the test runs: the console answers one with a redirect and
    a message, as it answers bad input, so the status alone does not tell them apart."""
    made = []
    original = PermissionRefused.__init__

    def init(self, *args, **kwargs):
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(PermissionRefused, "__init__", init)
    return made


def _refusals(user) -> int:
    return AuditEntry.objects.filter(actor_name=user.username, outcome="refused").count()


PATTERNS = [pattern for pattern in _named_patterns() if pattern[0] not in SKIPPED]
ACTORS = ["alice", "anonymous", "outsider", "member"]


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("pattern", PATTERNS, ids=[name for name, _, _ in PATTERNS])
def test_url_keeps_accounts_apart(world, db, pattern, actor, permission_refusals):
    walk = _walk(world, *pattern)
    if walk.methods == ["get"] and actor == "member":
        pytest.skip("the member is checked on writes only")
    for method in walk.methods:
        if method != "get":
            _write(world, walk, method, actor, permission_refusals)
        elif actor != "member":
            _read(world, walk, actor)


def test_the_walk_goes_everywhere(world, db):
    """Console and API, reads and writes: the URL conf walk really finds them."""
    checked = set()
    for pattern in PATTERNS:
        walk = _walk(world, *pattern)
        checked |= {f"{method.upper()} {walk.name}" for method in walk.methods}
    assert {
        "GET compute:vm-detail",
        "GET api:vm-detail",
        "POST compute:vm-start",
        "POST iam:revoke",
    } <= checked
    assert {"GET audit:entries", "GET api:audit-entry-list", "DELETE api:role-binding-detail"} <= checked
    assert {"GET images:catalogue", "GET images:detail", "POST images:share", "PUT images:file"} <= checked
    # Retry and delete of every long operation that can fail.
    assert {
        "POST snapshots:retry",
        "POST snapshots:restore-retry",
        "POST snapshots:restore-delete",
    } <= checked
    assert {"POST images:retry", "POST policies:drill-retry", "POST policies:drill-delete"} <= checked
    assert {"GET api:drill-detail", "POST api:drill-retry", "DELETE api:drill-detail"} <= checked
    assert {"POST api:restore-retry", "DELETE api:restore-detail", "POST api:image-retry"} <= checked
