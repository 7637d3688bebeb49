"""Notifications: a policy's notify_channel hears about skipped or failed runs and retention errors, once
per policy and slot, on a real HTTP server on 127.0.0.1 (webhook) or in Django's outbox (email); and the
console's channels (add, delete, who may) and the policy page's last notifications."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.urls import reverse

from clouddigit.audit.models import AuditEntry
from clouddigit.errors import InvalidRequest, PermissionRefused
from policies import engine, notifications
from policies.channels import create_channel, delete_channel, rotate_secret
from policies.models import Notification, NotificationChannel, Policy, SlotRun
from policies.services import apply_policy
from tests.policies.test_pages import LIST, console
from tests.policies.test_scheduler import POLICY
from tests.test_outbound import INTERNAL_URLS

SLOT = datetime(2026, 1, 5, 20, 0, tzinfo=UTC)  # 02:00 BDT on Tuesday 6 January
AFTER_SLOT = datetime(2026, 1, 5, 20, 30, tzinfo=UTC)
CHANNELS = reverse("policies:channel-create")
SKIP_REASON = "VM was stopped at the scheduled time (when_stopped: skip)"
SKIPPING_POLICY = POLICY.format(when_stopped="skip")  # notify_channel: slack-ops


class _Recorder(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.posts.append(
            {
                "path": self.path,
                "content_type": self.headers["Content-Type"],
                "json": json.loads(body),
                "body": body,
                "headers": self.headers,
            }
        )
        time.sleep(self.server.delay)
        self.send_response(self.server.status)
        if self.server.location:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):  # noqa: A002  (the base class's name)
        pass


@pytest.fixture
def on_premises(settings):
    """The operator allowlists 127.0.0.1 for on-premises receivers, so the tests' receivers are reachable."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.1/32"]


@pytest.fixture
def hook(on_premises):
    """A webhook receiver on 127.0.0.1 (allowlisted) that records every POST and answers `status`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.posts, server.status, server.delay, server.location = [], 200, 0.0, ""
    server.host = f"127.0.0.1:{server.server_port}"
    server.url = f"http://{server.host}/services/T000/B000/secret-token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port(on_premises):
    """A port on 127.0.0.1 that nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_spread(settings):
    settings.POLICY_SPREAD_MINUTES = 0


@pytest.fixture
def public_url(settings):
    settings.PUBLIC_URL = "https://console.example.test"
    return settings.PUBLIC_URL


def _policy(project, text=SKIPPING_POLICY) -> Policy:
    """The policy (notify_channel: slack-ops), as if applied at noon UTC before SLOT."""
    policy = apply_policy(actor=None, project=project, text=text)
    Policy.objects.filter(pk=policy.pk).update(created_at=datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    return Policy.objects.select_related("project").get(pk=policy.pk)


def _webhook(project, url, name="slack-ops") -> NotificationChannel:
    return create_channel(actor=None, project=project, name=name, kind="webhook", target=url)


def _run(policy, vm, outcome, reason="", slot_at=SLOT, klass="daily") -> SlotRun:
    return SlotRun.objects.create(
        policy=policy, vm=vm, slot_at=slot_at, klass=klass, outcome=outcome, reason=reason, claim=uuid.uuid4()
    )


def _tick_and_notify(now):
    """A scheduler tick, which notifies as it goes; the notifications it wrote."""
    before = set(Notification.objects.values_list("pk", flat=True))
    engine.tick(now)
    return list(Notification.objects.exclude(pk__in=before))


def test_a_skipped_run_posts_one_slack_message_with_the_reason_and_the_coverage_link(
    make_vm, prod, hook, no_spread, public_url, django_capture_on_commit_callbacks
):
    make_vm(prod, "web-01", tags={"env": "prod"})  # stopped
    _webhook(prod, hook.url)
    policy = _policy(prod)

    with django_capture_on_commit_callbacks(execute=True):
        sent = _tick_and_notify(AFTER_SLOT)

    assert len(hook.posts) == 1
    post = hook.posts[0]
    assert post["path"] == "/services/T000/B000/secret-token"
    assert post["content_type"] == "application/json" and set(post["json"]) == {"text"}
    text = post["json"]["text"]
    assert text.startswith("Snapshot policy acme-prod-default (acme/prod): 1 of 1 VMs got no snapshot")
    assert "at the slot of 2026-01-06 02:00 BDT (2026-01-05 20:00 UTC). Runs: 1 skipped." in text
    assert f"• web-01 (daily): skipped: {SKIP_REASON}" in text
    assert f"Coverage: https://console.example.test/policies/{policy.pk}/#coverage" in text
    notification = Notification.objects.get()
    assert sent == [notification]
    assert (notification.kind, notification.slot_at, notification.ok, notification.error) == (
        "runs",
        SLOT,
        True,
        "",
    )
    assert notification.channel.name == "slack-ops" and notification.message == text

    # The same slot again, from the same runs or from a later tick: nothing more is sent.
    assert notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT) == []
    with django_capture_on_commit_callbacks(execute=True):
        assert _tick_and_notify(AFTER_SLOT + timedelta(minutes=1)) == []
    assert len(hook.posts) == 1 and Notification.objects.count() == 1


def test_a_slot_where_every_vm_got_its_snapshot_sends_nothing(
    make_vm, prod, hook, no_spread, django_capture_on_commit_callbacks
):
    _webhook(prod, hook.url)
    policy = _policy(prod)
    _run(policy, make_vm(prod, "db-01", tags={"env": "prod"}), SlotRun.Outcome.CREATED)

    assert notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT) == []
    assert hook.posts == [] and not Notification.objects.exists()


def test_the_message_counts_every_outcome_and_lists_ten_vms(make_vm, prod, hook, no_spread):
    _webhook(prod, hook.url)
    policy = _policy(prod)
    for n in range(12):
        _run(policy, make_vm(prod, f"app-{n:02d}"), SlotRun.Outcome.FAILED, "the backend answered 503")
    _run(policy, make_vm(prod, "db-01"), SlotRun.Outcome.CREATED)
    _run(policy, make_vm(prod, "db-02"), SlotRun.Outcome.MISSED, "the scheduler was down")

    notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT)

    (post,) = hook.posts
    lines = post["json"]["text"].splitlines()
    assert "13 of 14 VMs got no snapshot" in lines[0] and "Runs: 1 created, 12 failed, 1 missed." in lines[0]
    listed = [line for line in lines if line.startswith("• ")]
    assert len(listed) == 10
    assert listed[0] == "• app-00 (daily): failed: the backend answered 503"
    assert "… and 3 more." in lines


def test_a_slot_is_reported_once_its_spread_window_has_passed_with_all_its_runs(
    make_vm, prod, hook, settings
):
    """Starts of one slot spread over POLICY_SPREAD_MINUTES, a few VMs per tick: one message, at the end."""
    settings.POLICY_SPREAD_MINUTES = 10
    _webhook(prod, hook.url)
    policy = _policy(prod)
    early = _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.SKIPPED, SKIP_REASON)
    assert notifications.notify_runs(policy, [early], SLOT + timedelta(minutes=3)) == []
    late = _run(policy, make_vm(prod, "web-02"), SlotRun.Outcome.FAILED, "the backend answered 503")
    assert notifications.notify_runs(policy, [late], SLOT + timedelta(minutes=7)) == []
    assert hook.posts == []

    # The tick after the window: no run of its own for that slot; the policy was scanned up to 09:59.
    policy.scanned_until = SLOT + timedelta(minutes=9, seconds=59)
    (notification,) = notifications.notify_runs(policy, [], SLOT + timedelta(minutes=10))

    (post,) = hook.posts
    text = post["json"]["text"]
    assert "2 of 2 VMs got no snapshot" in text and "web-01 (daily): skipped" in text
    assert "web-02 (daily): failed: the backend answered 503" in text
    assert notification.ok and notification.slot_at == SLOT


def test_an_email_channel_gets_one_mail(make_vm, prod, no_spread, mailoutbox, settings, public_url):
    settings.DEFAULT_FROM_EMAIL = "snapshots@clouddigit.example"
    create_channel(
        actor=None,
        project=prod,
        name="slack-ops",
        kind="email",
        target="ops@acme.example, oncall@acme.example",
    )
    policy = _policy(prod)
    _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.SKIPPED, SKIP_REASON)

    notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT)
    notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT)

    (mail,) = mailoutbox
    assert mail.to == ["ops@acme.example", "oncall@acme.example"]
    assert mail.from_email == "snapshots@clouddigit.example"
    assert mail.subject.startswith("Snapshot policy acme-prod-default (acme/prod): 1 of 1 VMs")
    assert SKIP_REASON in mail.body
    assert f"https://console.example.test/policies/{policy.pk}/#coverage" in mail.body
    assert Notification.objects.get().ok is True


def test_a_webhook_answering_500_is_recorded_and_not_retried(make_vm, prod, hook, no_spread):
    hook.status = 500
    _webhook(prod, hook.url)
    policy = _policy(prod)
    _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.SKIPPED, SKIP_REASON)

    (notification,) = notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT)
    assert notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT) == []

    assert len(hook.posts) == 1
    stored = Notification.objects.get()
    assert stored == notification and stored.ok is False and stored.sent_at is not None
    assert stored.error == f"{hook.host} answered HTTP 500 Internal Server Error"
    assert "secret-token" not in stored.error


def test_a_refused_connection_is_recorded_without_raising(make_vm, prod, closed_port, no_spread):
    _webhook(prod, f"http://127.0.0.1:{closed_port}/services/T000/B000/secret-token")
    policy = _policy(prod)
    _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.FAILED, "the backend answered 503")

    (notification,) = notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT)

    notification.refresh_from_db()
    assert notification.ok is False
    assert notification.error == f"could not connect to 127.0.0.1:{closed_port}: Connection refused"


def test_a_webhook_that_does_not_answer_in_time_is_recorded(make_vm, prod, hook, no_spread, monkeypatch):
    monkeypatch.setattr(notifications, "TIMEOUT_SECONDS", 0.2)
    hook.delay = 1.0
    _webhook(prod, hook.url)
    policy = _policy(prod)
    _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.SKIPPED, SKIP_REASON)

    (notification,) = notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT)

    assert (notification.ok, notification.error) == (False, f"{hook.host} did not answer within 0.2 s")


def test_a_channel_missing_from_the_project_is_recorded(make_vm, prod, sandbox, hook, no_spread):
    _webhook(sandbox, hook.url)  # the same name, in another project
    policy = _policy(prod)
    _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.SKIPPED, SKIP_REASON)

    (notification,) = notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT)

    assert hook.posts == []
    stored = Notification.objects.get()
    assert stored == notification and stored.channel is None and stored.ok is False
    assert stored.error == "no channel named slack-ops in project acme/prod"


def test_a_policy_without_notify_channel_records_nothing(make_vm, prod, hook, no_spread):
    _webhook(prod, hook.url)
    policy = _policy(prod, SKIPPING_POLICY.replace("notify_channel: slack-ops\n", ""))
    _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.SKIPPED, SKIP_REASON)

    assert notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT) == []
    assert notifications.notify_retention_error(policy, SLOT, "in use") is None
    assert hook.posts == [] and not Notification.objects.exists()


def test_a_retention_error_is_notified_once_per_slot_apart_from_the_runs(
    make_vm, prod, hook, no_spread, public_url
):
    _webhook(prod, hook.url)
    policy = _policy(prod)
    _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.SKIPPED, SKIP_REASON)
    notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT)
    message = "could not delete web-01-daily-20260105-2000: it is being restored"

    first = notifications.notify_retention_error(policy, SLOT, message)
    again = notifications.notify_retention_error(policy, SLOT, message)

    assert first is not None and first.ok and again is None
    assert [post["json"]["text"].splitlines()[0] for post in hook.posts] == [
        "Snapshot policy acme-prod-default (acme/prod): 1 of 1 VMs got no snapshot at the slot of "
        "2026-01-06 02:00 BDT (2026-01-05 20:00 UTC). Runs: 1 skipped.",
        "Snapshot policy acme-prod-default (acme/prod): retention error for the slot of "
        "2026-01-06 02:00 BDT (2026-01-05 20:00 UTC).",
    ]
    assert message in hook.posts[1]["json"]["text"]
    assert f"{public_url}/policies/{policy.pk}/#coverage" in hook.posts[1]["json"]["text"]
    assert sorted(Notification.objects.values_list("kind", flat=True)) == ["retention", "runs"]


@pytest.mark.django_db(transaction=True)
def test_two_racing_ticks_send_a_slot_once(make_vm, prod, hook, no_spread):
    _webhook(prod, hook.url)
    policy = _policy(prod)
    _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.SKIPPED, SKIP_REASON)
    results, barrier = [], threading.Barrier(2)

    def tick():
        barrier.wait()
        try:
            mine = Policy.objects.select_related("project").get(pk=policy.pk)
            results.append(len(notifications.notify_runs(mine, list(SlotRun.objects.all()), AFTER_SLOT)))
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [0, 1]
    assert len(hook.posts) == 1 and Notification.objects.count() == 1


# --- Console ------------------------------------------------------------------------------------------


def test_an_admin_adds_and_deletes_a_channel_on_the_policies_page(client, alice, prod):
    page = console(client, alice, prod).get(LIST).content.decode()
    assert 'id="channels"' in page and "No notification channels in acme/prod yet." in page
    assert f'action="{CHANNELS}"' in page and 'name="target"' in page

    response = client.post(
        CHANNELS,
        {
            "project": str(prod.pk),
            "name": "slack-ops",
            "kind": "webhook",
            "target": "https://hooks.slack.example/services/T000/B000/secret-token",
        },
    )

    assert response.status_code == 302 and response["Location"] == f"{LIST}#channels"
    channel = NotificationChannel.objects.get()
    assert (channel.project, channel.name, channel.kind, channel.created_by) == (
        prod,
        "slack-ops",
        "webhook",
        "alice",
    )
    page = client.get(LIST).content.decode()
    assert "Added notification channel slack-ops to acme/prod." in page
    assert "<code>https://hooks.slack.example/…</code>" in page and "secret-token" not in page
    delete = reverse("policies:channel-delete", args=[channel.pk])
    assert f'action="{delete}"' in page

    response = client.post(delete, {"confirmed": "yes"})

    assert response.status_code == 302 and not NotificationChannel.objects.exists()
    entries = AuditEntry.objects.filter(action__startswith="policy.channel.").order_by("at")
    assert [(e.action, e.outcome, e.actor_name, e.project) for e in entries] == [
        ("policy.channel.create", "success", "alice", prod),
        ("policy.channel.delete", "success", "alice", prod),
    ]


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        (
            {"name": "Slack Ops", "kind": "webhook", "target": "https://hooks.example/x"},
            400,
            "name: use lower-case letters, digits and &#x27;-&#x27; (up to 63), e.g. slack-ops",
        ),
        (
            {"name": "slack-ops", "kind": "webhook", "target": "ftp://hooks.example/x"},
            400,
            "target: the URL must start with http:// or https://.",
        ),
        (
            {"name": "mail-ops", "kind": "email", "target": "ops@acme.example, not-an-address"},
            400,
            "target: &#x27;not-an-address&#x27; is not an email address.",
        ),
        (
            {"name": "pager", "kind": "sms", "target": "+8801700000000"},
            400,
            "Select a valid choice. sms is not one of the available choices.",
        ),
        (
            {"name": "taken", "kind": "email", "target": "ops@acme.example"},
            409,
            "name: acme/prod already has a channel named taken.",
        ),
    ],
)
def test_a_bad_channel_is_refused_at_its_field(client, alice, prod, data, status, error):
    create_channel(actor=None, project=prod, name="taken", kind="email", target="a@acme.example")

    response = console(client, alice, prod).post(CHANNELS, {"project": str(prod.pk), **data})

    assert response.status_code == status
    page = response.content.decode()
    assert error in page
    assert f'value="{data["target"]}"' in page  # what the user typed is still there
    assert NotificationChannel.objects.count() == 1
    refusal = AuditEntry.objects.get(action="policy.channel.create", actor_name="alice")
    assert refusal.outcome == "refused" and refusal.project == prod


def test_an_operator_sees_the_channels_but_may_not_change_them(client, operator, prod):
    channel = create_channel(
        actor=None, project=prod, name="slack-ops", kind="email", target="a@acme.example"
    )
    console(client, operator, prod)

    page = client.get(LIST).content.decode()
    assert "slack-ops" in page and 'name="target"' not in page
    assert reverse("policies:channel-delete", args=[channel.pk]) not in page

    created = client.post(
        CHANNELS, {"project": str(prod.pk), "name": "mine", "kind": "email", "target": "o@acme.example"}
    )
    assert created.status_code == 403 and "manage_policies" in created.content.decode()
    deleted = client.post(reverse("policies:channel-delete", args=[channel.pk]), {"confirmed": "yes"})
    assert deleted.status_code == 403 and "manage_policies" in deleted.content.decode()

    assert list(NotificationChannel.objects.values_list("name", flat=True)) == ["slack-ops"]
    assert AuditEntry.objects.filter(actor_name="olga", outcome="refused").count() == 2
    with pytest.raises(PermissionRefused):
        delete_channel(actor=operator, channel=channel)


def test_an_outsider_gets_404_for_acme_channels(client, charlie, prod):
    channel = create_channel(
        actor=None, project=prod, name="slack-ops", kind="email", target="a@acme.example"
    )
    console(client, charlie)

    assert "slack-ops" not in client.get(LIST).content.decode()
    created = client.post(
        CHANNELS, {"project": str(prod.pk), "name": "mine", "kind": "email", "target": "c@globex.example"}
    )
    assert created.status_code == 404
    assert client.post(reverse("policies:channel-delete", args=[channel.pk])).status_code == 404
    assert list(NotificationChannel.objects.values_list("name", flat=True)) == ["slack-ops"]


def test_the_policy_page_shows_the_last_ten_notifications(client, alice, make_vm, prod, hook, no_spread):
    policy = _policy(prod)
    vm = make_vm(prod, "web-01")
    for day in range(12):
        slot = SLOT - timedelta(days=day)
        _run(policy, vm, SlotRun.Outcome.SKIPPED, SKIP_REASON, slot_at=slot)
        notifications.notify_runs(policy, list(SlotRun.objects.filter(slot_at=slot)), slot)
    detail = reverse("policies:detail", args=[policy.pk])

    page = console(client, alice).get(detail).content.decode()

    assert 'no channel named slack-ops in acme/prod</span> <a href="/policies/#channels">' in page
    section = page.split('id="notifications"')[1].split("</section>")[0]
    assert section.count("● not sent</span>: no channel named slack-ops in project acme/prod") == 10
    assert "2026-01-05 20:00" in section and "2025-12-27 20:00" in section
    assert "2025-12-26 20:00" not in section

    _webhook(prod, hook.url)
    Notification.objects.all().delete()  # they carry their ticks' times; today's date must not matter
    notifications.notify_retention_error(policy, SLOT, "it is being restored")
    page = client.get(detail).content.decode()
    assert "● sent" in page and f"Webhook (Slack-compatible JSON): http://{hook.host}/…" in page


def test_the_channels_cost_one_query_however_many(client, alice, prod, django_assert_max_num_queries):
    apply_policy(actor=None, project=prod, text=SKIPPING_POLICY)
    for n in range(5):
        create_channel(actor=None, project=prod, name=f"team-{n}", kind="email", target=f"t{n}@acme.example")
    _webhook(prod, "https://hooks.slack.example/services/T000/B000/secret-token")
    console(client, alice, prod)

    with django_assert_max_num_queries(10):  # as with no channel: session, user, scope, permissions, 2 lists
        page = client.get(LIST).content.decode()

    assert page.count("@acme.example</code>") == 5
    assert "<td>slack-ops</td><td>Webhook (Slack-compatible JSON)</td>" in page
    assert "<td>acme-prod-default</td>" in page  # the policy that names slack-ops


def test_the_audit_log_never_holds_a_webhook_url(prod):
    from clouddigit.audit.models import AuditEntry
    from policies.channels import create_channel

    create_channel(
        actor=None,
        project=prod,
        name="slack-ops",
        kind="webhook",
        target="https://hooks.example.test/services/T000/B000/secret-token",
    )
    entry = AuditEntry.objects.get(action="policy.channel.create")
    assert "secret-token" not in str(entry.detail) and entry.detail["target"] == "[not logged]"


# --- Webhooks reach public addresses only ----------------------------------------------------------


def _master_delete_url(seaweed, bucket: str) -> str:
    """The issue's attack: the embedded SeaweedFS master deletes a bucket's collection on request."""
    return f"http://127.0.0.1:{seaweed.server.ports['master']}/col/delete?collection={bucket}"


def test_a_webhook_at_the_object_stores_master_is_refused_when_added(client, alice, prod, seaweed):
    store = seaweed.store()
    target = _master_delete_url(seaweed, store.bucket)

    response = console(client, alice, prod).post(
        CHANNELS, {"project": str(prod.pk), "name": "slack-ops", "kind": "webhook", "target": target}
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert (
        "target: 127.0.0.1 is a loopback address, not a public one. Webhooks go to public addresses only: "
        "use a public https:// URL, or ask your Cloud Digit operator to allowlist the network of an "
        "on-premises receiver." in page
    )
    assert not NotificationChannel.objects.exists()
    refusal = AuditEntry.objects.get(action="policy.channel.create")
    assert refusal.outcome == "refused" and "col/delete" not in str(refusal.detail) + refusal.message


def test_a_webhook_row_at_the_object_stores_master_is_refused_when_sent(make_vm, prod, seaweed, no_spread):
    store = seaweed.store()
    store.put_bytes("images/stock.qcow2", b"the stock image")
    NotificationChannel.objects.create(  # as if it predates the check, or got in some other way
        project=prod, name="slack-ops", kind="webhook", target=_master_delete_url(seaweed, store.bucket)
    )
    policy = _policy(prod)
    _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.SKIPPED, SKIP_REASON)

    (notification,) = notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT)

    notification.refresh_from_db()
    assert notification.ok is False and notification.sent_at is not None
    master = f"127.0.0.1:{seaweed.server.ports['master']}"
    assert notification.error == (
        f"refused to post to {master}: 127.0.0.1 is a loopback address, not a public one"
    )
    assert store.get_bytes("images/stock.qcow2") == b"the stock image"


@pytest.mark.parametrize(("url", "reason"), INTERNAL_URLS)
def test_a_webhook_to_an_internal_address_is_refused_in_every_spelling(prod, url, reason):
    with pytest.raises(InvalidRequest) as refused:
        _webhook(prod, url)

    assert refused.value.field == "target" and refused.value.message.startswith("target: ")
    if url != url.strip():  # the form's spaces around a URL are trimmed; what is left is still refused
        reason = "127.0.0.1 is a loopback address"
    assert reason in refused.value.message
    assert not NotificationChannel.objects.exists()


def test_a_name_that_moved_to_an_internal_address_after_the_check_is_refused_when_sent(
    make_vm, prod, dns, no_spread
):
    dns["hooks.acme.example"] = ["93.184.215.14"]
    _webhook(prod, "https://hooks.acme.example/services/T000/B000/secret-token")
    dns["hooks.acme.example"] = ["127.0.0.1"]  # DNS rebinding, or a record changed since
    policy = _policy(prod)
    _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.SKIPPED, SKIP_REASON)

    (notification,) = notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT)

    notification.refresh_from_db()
    assert (notification.ok, notification.error) == (
        False,
        "refused to post to hooks.acme.example: hooks.acme.example resolves to 127.0.0.1, a loopback "
        "address, not a public one",
    )


def test_a_redirect_is_recorded_as_a_failure_and_not_followed(make_vm, prod, hook, no_spread, closed_port):
    hook.status, hook.location = 302, f"http://127.0.0.1:{closed_port}/elsewhere"
    _webhook(prod, hook.url)
    policy = _policy(prod)
    _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.SKIPPED, SKIP_REASON)

    (notification,) = notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT)

    assert len(hook.posts) == 1
    assert (notification.ok, notification.error) == (
        False,
        f"{hook.host} answered HTTP 302 Found, a redirect to http://127.0.0.1:{closed_port}/elsewhere, "
        "which is not followed: add a channel with the final URL",
    )


def test_a_webhook_post_is_signed_with_the_channels_secret(make_vm, prod, hook, no_spread):
    channel = _webhook(prod, hook.url)
    assert len(channel.secret) == 64
    policy = _policy(prod)
    _run(policy, make_vm(prod, "web-01"), SlotRun.Outcome.SKIPPED, SKIP_REASON)

    notifications.notify_runs(policy, list(SlotRun.objects.all()), AFTER_SLOT)

    (post,) = hook.posts
    timestamp, body = post["headers"]["X-CloudDigit-Timestamp"], post["body"]
    assert abs(int(timestamp) - time.time()) < 60
    # The README's recipe: HMAC-SHA256 of "<timestamp>.<body>" with the secret, in hex.
    expected = hmac.new(channel.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert post["headers"]["X-CloudDigit-Signature"] == f"sha256={expected}"
    other = create_channel(actor=None, project=prod, name="other", kind="webhook", target=hook.url)
    assert other.secret != channel.secret


def test_the_signing_secret_is_shown_once_and_never_logged(client, alice, prod, dns):
    console(client, alice, prod)
    target = "https://hooks.slack.example/services/T000/B000/secret-token"

    response = client.post(
        CHANNELS,
        {"project": str(prod.pk), "name": "slack-ops", "kind": "webhook", "target": target},
        follow=True,
    )

    secret = NotificationChannel.objects.get().secret
    page = response.content.decode()
    assert f"<code>{secret}</code>" in page and "it is not shown again" in page
    assert secret not in client.get(LIST).content.decode()
    entry = AuditEntry.objects.get(action="policy.channel.create")
    assert secret not in str(entry.detail) + entry.message + entry.target_name


def test_an_admin_gives_a_webhook_a_new_secret_shown_once(client, alice, operator, prod):
    channel = _webhook(prod, "https://hooks.slack.example/services/T000/B000/secret-token")
    mail = create_channel(actor=None, project=prod, name="mail", kind="email", target="a@acme.example")
    old = channel.secret
    rotate = reverse("policies:channel-rotate-secret", args=[channel.pk])
    assert f'action="{rotate}"' in console(client, alice, prod).get(LIST).content.decode()

    response = client.post(rotate, {"confirmed": "yes"}, follow=True)

    channel.refresh_from_db()
    assert channel.secret != old and len(channel.secret) == 64
    page = response.content.decode()
    assert "Gave notification channel slack-ops a new signing secret." in page
    assert f"<code>{channel.secret}</code>" in page
    assert channel.secret not in client.get(LIST).content.decode()
    entry = AuditEntry.objects.get(action="policy.channel.rotate-secret")
    assert entry.outcome == "success" and channel.secret not in str(entry.detail) + entry.message

    refused = client.post(
        reverse("policies:channel-rotate-secret", args=[mail.pk]), {"confirmed": "yes"}, follow=True
    )
    assert "mail is an email channel: only webhooks are signed." in refused.content.decode()
    with pytest.raises(PermissionRefused):
        rotate_secret(actor=operator, channel=channel)
    channel.refresh_from_db()
    assert channel.secret not in {old, ""}


def test_existing_webhook_channels_get_a_secret_when_migrated(prod):
    migration = importlib.import_module("policies.migrations.0006_channel_secret")
    for name, kind, target in [
        ("a", "webhook", "https://a.example/"),
        ("b", "webhook", "https://b.example/"),
        ("m", "email", "m@acme.example"),
    ]:
        NotificationChannel.objects.create(project=prod, name=name, kind=kind, target=target)

    migration.give_webhooks_a_secret(django_apps, None)

    secrets = dict(NotificationChannel.objects.values_list("name", "secret"))
    assert len(secrets["a"]) == len(secrets["b"]) == 64 and secrets["a"] != secrets["b"]
    assert secrets["m"] == ""
