"""Guessing passwords: after AXES_FAILURE_LIMIT wrong passwords for one username from one address, even
the right password is refused until the cool-off ends, on the sign-in page and the token endpoint alike.
The lock-out is in our audit log; other users and other addresses are not affected."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from clouddigit.audit.models import AuditEntry

ATTACKER = "203.0.113.7"
LOCKED = (
    r"Too many failed sign-ins for alice from your address\. "
    r"Try again after \d\d:\d\d UTC \(in 15 minutes\)"
)


def _sign_in(client, username: str, password: str, ip: str = ATTACKER):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip)


def _token(client, username: str, password: str, ip: str = ATTACKER):
    return client.post(
        reverse("api:token"), {"username": username, "password": password}, REMOTE_ADDR=ip, format="json"
    )


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


def test_the_sign_in_page_locks_out_a_password_guesser(client, alice, bob, settings):
    assert settings.AXES_FAILURE_LIMIT == 10
    for _ in range(9):
        assert _sign_in(client, "alice", "guess").status_code == 200  # the form again, with its error
    assert _sign_in(client, "alice", "guess").status_code == 429  # the 10th failure locks out

    response = _sign_in(client, "alice", "alice-pass")
    assert response.status_code == 429
    page = response.content.decode()
    assert re.search(LOCKED, page), page
    assert "_auth_user_id" not in client.session
    assert client.get(reverse("compute:vm-list")).status_code == 302  # still signed out

    lockouts = AuditEntry.objects.filter(action="auth.lockout")
    assert lockouts.count() == 1
    entry = lockouts.get()
    assert (entry.outcome, entry.target_name, entry.source_ip) == ("refused", "alice", ATTACKER)
    assert entry.detail["failures"] == 10
    # Attempts during the lock-out are refused and audited as such, without a new lock-out entry.
    refused = AuditEntry.objects.filter(action="auth.sign-in", outcome="refused").first()
    assert "locked out" in refused.message

    # Another user from the same address, and the same user from another address, sign in.
    assert _sign_in(client, "bob", "bob-pass").status_code == 302
    assert _sign_in(client, "alice", "alice-pass", ip="198.51.100.20").status_code == 302


def test_the_token_endpoint_locks_out_a_password_guesser(api_client, alice, bob):
    for _ in range(12):
        assert _token(api_client, "alice", "guess").status_code in (400, 429)

    response = _token(api_client, "alice", "alice-pass")
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "TooManySignInAttempts"
    assert re.match(LOCKED, body["message"])
    assert 0 < int(response["Retry-After"]) <= 15 * 60
    assert not Token.objects.filter(user=alice).exists()
    assert AuditEntry.objects.filter(action="auth.lockout", target_name="alice").count() == 1

    assert _token(api_client, "bob", "bob-pass").status_code == 200
    assert _token(api_client, "alice", "alice-pass", ip="198.51.100.20").status_code == 200


def test_a_successful_sign_in_starts_the_count_again(client, alice):
    for _ in range(9):
        _sign_in(client, "alice", "guess")
    assert _sign_in(client, "alice", "alice-pass").status_code == 302
    client.logout()
    for _ in range(9):
        _sign_in(client, "alice", "guess")
    assert _sign_in(client, "alice", "alice-pass").status_code == 302
    assert not AuditEntry.objects.filter(action="auth.lockout").exists()
