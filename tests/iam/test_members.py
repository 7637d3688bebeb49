"""An account admin grants roles only to users (and groups) of the account: another account's user is
refused with the very answer a name that does not exist gets, so grants reveal no usernames."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from clouddigit.audit.models import AuditEntry
from clouddigit.errors import InvalidRequest, PermissionRefused
from iam.models import AccountMember, RoleBinding
from iam.services import add_member, grant_role


def _refusal(actor, account, project, **principal) -> tuple:
    with pytest.raises(InvalidRequest) as refused:
        grant_role(actor=actor, role="image.viewer", account=account, project=project, **principal)
    return (
        type(refused.value),
        refused.value.status,
        refused.value.code,
        refused.value.field,
        refused.value.message,
    )


def test_a_user_of_another_account_is_refused_like_a_user_that_does_not_exist(alice, charlie, prod):
    other = _refusal(alice, prod.account, prod, username="charlie")
    missing = _refusal(alice, prod.account, prod, username="ghost")
    assert other[4] == "No user named 'charlie' in account acme."
    assert other[:4] == missing[:4]
    assert missing[4] == "No user named 'ghost' in account acme."
    assert not RoleBinding.objects.filter(user=charlie, account=prod.account).exists()
    assert not AccountMember.objects.filter(user=charlie, account=prod.account).exists()
    messages = AuditEntry.objects.filter(action="iam.role.grant", outcome="refused").values_list(
        "message", flat=True
    )
    assert sorted(messages) == [
        "InvalidRequest: No user named 'charlie' in account acme.",
        "InvalidRequest: No user named 'ghost' in account acme.",
    ]


def test_an_inactive_user_of_the_account_is_refused_the_same_way(alice, prod, django_user_model):
    dave = django_user_model.objects.create_user("dave")
    add_member(actor=None, account=prod.account, username="dave")
    dave.is_active = False
    dave.save()
    assert _refusal(alice, prod.account, prod, username="dave")[4] == "No user named 'dave' in account acme."


def test_a_group_not_of_the_account_is_refused_like_a_missing_group(alice, prod):
    Group.objects.create(name="globex-ops")
    other = _refusal(alice, prod.account, prod, group_name="globex-ops")
    missing = _refusal(alice, prod.account, prod, group_name="nope")
    assert other[:4] == missing[:4]
    assert other[4] == "No group named 'globex-ops' in account acme."


def test_a_user_of_two_accounts_can_be_granted_in_both(alice, charlie, prod, globex_main):
    add_member(actor=None, account=prod.account, username="charlie")
    binding = grant_role(
        actor=alice, role="image.viewer", account=prod.account, project=prod, username="charlie"
    )
    assert binding.user == charlie


def test_the_platform_places_users_and_account_admins_cannot(alice, prod, django_user_model):
    admin = django_user_model.objects.create_superuser("root")
    django_user_model.objects.create_user("dave")
    with pytest.raises(PermissionRefused, match="Only platform staff add users to account acme"):
        add_member(actor=alice, account=prod.account, username="dave")
    assert not AccountMember.objects.filter(user__username="dave").exists()

    grant_role(actor=admin, role="image.viewer", account=prod.account, project=prod, username="dave")
    assert AccountMember.objects.get(user__username="dave").added_by == "root"
    grant_role(actor=alice, role="snapshot.viewer", account=prod.account, project=prod, username="dave")


def _page_text(response, name: str) -> str:
    """The page as the user reads it, with the name typed made neutral and the per-response CSRF token
    dropped."""
    text = re.sub(
        r'("X-CSRFToken": "|name="csrfmiddlewaretoken" value=")[^"]+', r"\1", response.content.decode()
    )
    return text.replace(name, "NAME")


def _api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def test_api_answers_another_accounts_user_and_a_missing_one_alike(alice, charlie, prod):
    answers = [
        _api(alice).post(
            "/api/v1/iam/role-bindings/",
            {"role": "image.viewer", "user": name, "project": "acme/prod"},
            format="json",
        )
        for name in ("charlie", "ghost")
    ]
    assert [answer.status_code for answer in answers] == [400, 400]
    bodies = [answer.json() for answer in answers]
    assert bodies[0] == {
        "code": "InvalidRequest",
        "message": "No user named 'charlie' in account acme.",
        "field": "user",
    }
    assert bodies[1] == {**bodies[0], "message": "No user named 'ghost' in account acme."}
    assert not RoleBinding.objects.filter(user=charlie, account=prod.account).exists()


def test_console_answers_another_accounts_user_and_a_missing_one_alike(client, alice, charlie, prod):
    client.force_login(alice)
    pages = [
        client.post(
            reverse("iam:grant"),
            {"account": "acme", "user": name, "role": "image.viewer", "where": str(prod.pk)},
        )
        for name in ("charlie", "ghost")
    ]
    assert [page.status_code for page in pages] == [400, 400]
    assert "No user named &#x27;charlie&#x27; in account acme." in pages[0].content.decode()
    assert _page_text(pages[0], "charlie") == _page_text(pages[1], "ghost")
    assert not RoleBinding.objects.filter(user=charlie, account=prod.account).exists()


def test_effective_permissions_page_reveals_no_other_accounts_users(
    client, alice, charlie, prod, django_user_model
):
    client.force_login(alice)
    other = client.get(reverse("iam:effective", args=["charlie"]))
    missing = client.get(reverse("iam:effective", args=["ghost"]))
    assert (other.status_code, missing.status_code) == (404, 404)
    assert _page_text(other, "charlie") == _page_text(missing, "ghost")

    django_user_model.objects.create_user("dave")
    add_member(actor=None, account=prod.account, username="dave")
    page = client.get(reverse("iam:effective", args=["dave"]))
    assert page.status_code == 200 and "has no role in any project you can see" in page.content.decode()
