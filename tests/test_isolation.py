"""Walks every console URL and every API endpoint, found in the URL conf, as four people:

- anonymous: sent to the login page (console) or answered 401 (API);
- alice, admin of acme: reads succeed for some acme object;
- charlie, admin of globex: never sees acme — 404 for acme objects, acme absent from every list;
- bob, a publisher in acme/prod: every write is refused (4xx, or a refusal in the audit log).

A new view is covered without anyone adding it here; if no acme object makes it answer, the test says so.
"""

from __future__ import annotations

import itertools

import pytest
from django.urls import get_resolver, reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from clouddigit.audit.models import AuditEntry
from clouddigit.compute.models import Region
from iam.models import RoleBinding
from images import attestation
from images.models import Image
from policies import channels as policy_channels
from policies import services as policy_services
from policies.models import Drill
from snapshots import services as snapshot_services
from snapshots.models import Snapshot

# Public by design, or changing nothing but the caller's own session (the project/region switcher,
# which ignores projects the caller cannot see: tests/compute/test_pages.py).
SKIPPED = {"login", "logout", "api:token", "switch-scope"}
# Endpoints that need a query: it names an acme project, which the outsider must be refused (400).
QUERIES = {
    "api:image-picker": "?project=acme/prod&region=bd-dha-1",
    "api:image-why-missing": "?project=acme/prod&region=bd-dha-1&image=acme-golden",
    "api:storage-quota-usage": "?project=acme/prod",
}
SKIPPED_NAMESPACES = {"admin"}  # Django's admin has its own staff-only login
OK = {200, 286}
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


def _methods(callback, answers_get: bool) -> list[str]:
    """A DRF viewset says which methods it routes; a console view is read-only unless it refuses GET."""
    actions = getattr(callback, "actions", None)
    if actions:
        return sorted(set(actions) - {"head", "options", "put", "patch"})
    return ["get"] if answers_get else ["post"]


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


@pytest.fixture
def world(alice, bob, charlie, make_vm, prod, sandbox, globex_main, dha, ctg):
    db01 = make_vm(prod, "db-01", tags={"env": "prod"})
    make_vm(sandbox, "dev-01")
    make_vm(globex_main, "gx-app-01")
    snapshot = snapshot_services.create_snapshot(actor=None, vm=db01, name="db-01-nightly")
    snapshot_services.take(str(snapshot.pk))
    restore = snapshot_services.restore_to_volume(
        actor=None, snapshot=Snapshot.objects.get(pk=snapshot.pk), name="db-01-copy"
    )
    snapshot_services.finish_restore(str(restore.pk))
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


def _refused(response, user, entries_before: int) -> bool:
    if 400 <= response.status_code < 500:
        return True
    return AuditEntry.objects.filter(actor_name=user.username, outcome="refused").count() > entries_before


def test_every_url_keeps_accounts_apart(world, alice, bob, charlie):
    checked = []
    seen: dict[str, bool] = {}

    def answers(url: str, api: bool) -> bool:
        """Alice's GET of `url` answers (remembered: parents are asked for many write URLs)."""
        if url not in seen:
            seen[url] = _answers(_client(alice, api).get(url))
        return seen[url]

    for name, params, callback in _named_patterns():
        if name in SKIPPED:
            continue
        api = name.startswith("api:")
        urls = [url + QUERIES.get(name, "") for url in _urls(name, params, world["values"])]
        assert urls, f"{name}: no test value fits its URL parameters {params}"
        reachable = [url for url in urls if answers(url, api)]
        for method in _methods(callback, answers_get=bool(reachable)):
            if method == "get":
                # Alice: some acme object makes the page answer.
                assert reachable, (
                    f"{name}: alice got no 200 for any acme object; add one to the world fixture"
                )
                url = reachable[0]
                anonymous = _client(None, api).get(url)
                if api:
                    assert anonymous.status_code == 401, f"{url}: anonymous got {anonymous.status_code}"
                else:
                    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"], url
                outsider = _client(charlie, api).get(url)
                if outsider.status_code == 302:
                    continue  # a redirect (home) shows nothing itself
                if name in QUERIES:
                    assert outsider.status_code == 400, f"{url}: the outsider got {outsider.status_code}"
                elif any(f"/{value}/" in url for value in world["acme_values"]):
                    assert outsider.status_code == 404, f"{url}: the outsider got {outsider.status_code}"
                else:
                    assert outsider.status_code in OK, url
                    body = b"".join(outsider.streaming_content) if outsider.streaming else outsider.content
                    for marker in world["acme_markers"]:
                        assert marker.encode() not in body, f"{url}: the outsider sees {marker}"
                checked.append(f"GET {name}")
            else:
                for url in _write_targets(urls, reachable, lambda url, api=api: answers(_parent(url), api)):
                    anonymous = getattr(_client(None, api), method)(url)
                    if api:
                        assert anonymous.status_code == 401, (
                            f"{method} {url}: anonymous got {anonymous.status_code}"
                        )
                    else:
                        assert anonymous.status_code == 302 and "/login/" in anonymous["Location"], url
                    for person in (charlie, bob):
                        before = AuditEntry.objects.filter(
                            actor_name=person.username, outcome="refused"
                        ).count()
                        # As htmx posts a destructive form once its dialog is answered (console.act).
                        response = getattr(_client(person, api), method)(url, {"confirmed": "yes"})
                        assert _refused(response, person, before), (
                            f"{method.upper()} {url} as {person.username}: {response.status_code}, no refusal"
                        )
                checked.append(f"{method.upper()} {name}")
    # The walk really went somewhere: console and API, reads and writes.
    assert {"GET compute:vm-detail", "GET api:vm-detail", "POST compute:vm-start", "POST iam:revoke"} <= set(
        checked
    )
    assert {"GET audit:entries", "GET api:audit-entry-list", "DELETE api:role-binding-detail"} <= set(checked)
    assert {"GET images:catalogue", "GET images:detail", "POST images:share", "POST images:file"} <= set(
        checked
    )
    # Retry and delete of every long operation that can fail.
    assert {"POST snapshots:retry", "POST snapshots:restore-retry", "POST snapshots:restore-delete"} <= set(
        checked
    )
    assert {"POST images:retry", "POST policies:drill-retry", "POST policies:drill-delete"} <= set(checked)
    assert {"GET api:drill-detail", "POST api:drill-retry", "DELETE api:drill-detail"} <= set(checked)
    assert {"POST api:restore-retry", "DELETE api:restore-detail", "POST api:image-retry"} <= set(checked)
