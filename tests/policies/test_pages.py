"""Console pages for snapshot policies: list, apply by paste or upload, errors where the user acted,
read, download and edit; no forms without `manage_policies`."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from clouddigit.audit.models import AuditEntry
from policies import services
from policies.models import Policy
from policies.spec import parse
from tests.policies.test_spec import EXAMPLE

LIST = reverse("policies:list")
APPLY = reverse("policies:apply")


def console(client, user, project=None):
    """`client` logged in as `user`, looking at `project` (the header's project switcher)."""
    client.force_login(user)
    if project is not None:
        client.post(reverse("switch-scope"), {"project": str(project.pk), "next": LIST})
    return client


@pytest.fixture
def applied(prod):
    return services.apply_policy(actor=None, project=prod, text=EXAMPLE)


def test_the_list_shows_the_current_projects_policies(
    client, alice, prod, sandbox, applied, django_assert_max_num_queries
):
    services.apply_policy(actor=None, project=sandbox, text=EXAMPLE.replace("acme-prod", "sandbox"))
    for name in ("second", "third"):  # more rows, no more queries
        services.apply_policy(actor=None, project=prod, text=EXAMPLE.replace("acme-prod-default", name))
    console(client, alice, prod)

    with django_assert_max_num_queries(10):  # session, user, scope, permissions; the policies; the channels
        page = client.get(LIST).content.decode()

    assert "acme-prod-default" in page and "sandbox-default" not in page
    assert "daily 02:00 BDT" in page and "weekly Sun 03:00 BDT" in page
    assert "7 daily, 4 weekly" in page and "env=prod" in page and "system" in page
    assert f'href="{reverse("policies:detail", args=[applied.pk])}"' in page
    assert 'enctype="multipart/form-data"' in page and 'name="yaml"' in page and 'name="file"' in page
    assert f'href="{LIST}" aria-current="page">Policies</a>' in page  # the nav item is a link now


def test_apply_by_pasting_yaml(client, snap_admin, prod):
    response = console(client, snap_admin, prod).post(APPLY, {"project": str(prod.pk), "yaml": EXAMPLE})

    policy = Policy.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("policies:detail", args=[policy.pk])
    assert (policy.project, policy.name, policy.source, policy.applied_by) == (
        prod,
        "acme-prod-default",
        EXAMPLE,
        "sam",
    )
    assert (
        "Applied snapshot policy acme-prod-default to acme/prod"
        in client.get(response["Location"]).content.decode()
    )


def test_apply_by_uploading_a_file_without_javascript(client, alice, prod):
    upload = SimpleUploadedFile("policy.yaml", EXAMPLE.encode(), content_type="application/x-yaml")

    response = console(client, alice, prod).post(APPLY, {"yaml": "", "file": upload})

    assert response.status_code == 302
    assert Policy.objects.get(project=prod).parsed == parse(EXAMPLE)


def test_a_bad_policy_shows_its_line_and_field_at_the_form(client, alice, prod):
    text = EXAMPLE.replace("daily: 7", "daily: seven")

    response = console(client, alice, prod).post(APPLY, {"yaml": text})

    assert response.status_code == 400
    page = response.content.decode()
    assert "line 6: retention.daily: must be a whole number from 0 to 1000, not &#x27;seven&#x27;" in page
    assert "daily: seven" in page  # what the user pasted is still in the textarea
    assert not Policy.objects.exists()
    assert AuditEntry.objects.get(action="policy.apply").outcome == "refused"


def test_a_bad_uploaded_file_shows_the_error_at_the_upload(client, alice, prod):
    upload = SimpleUploadedFile("policy.yaml", EXAMPLE.replace("Sun 03:00", "03:00").encode())

    response = console(client, alice, prod).post(APPLY, {"file": upload})

    assert response.status_code == 400
    assert "line 4: schedule.weekly: write it like" in response.content.decode()
    assert not Policy.objects.exists()


def test_a_form_with_neither_text_nor_file_is_refused_and_audited(client, alice, prod):
    response = console(client, alice, prod).post(APPLY, {"yaml": "  "})

    assert response.status_code == 400
    assert "Paste the policy&#x27;s YAML or choose a .yaml file." in response.content.decode()
    refusal = AuditEntry.objects.get(action="policy.apply")
    assert (refusal.outcome, refusal.actor_name, refusal.project) == ("refused", "alice", prod)


def test_the_policy_page_shows_the_canonical_yaml_and_downloads_it(client, alice, applied):
    page = console(client, alice).get(reverse("policies:detail", args=[applied.pk])).content.decode()
    export_url = reverse("policies:export", args=[applied.pk])

    assert "when_stopped: skip" in page  # canonical: the default is written out
    assert f'href="{export_url}"' in page

    download = client.get(export_url)
    assert download.status_code == 200
    assert download["Content-Type"] == "text/yaml; charset=utf-8"
    assert download["Content-Disposition"] == 'attachment; filename="acme-prod-default.yaml"'
    assert parse(download.content.decode()) == applied.parsed


def test_edit_applies_the_changed_yaml_through_the_service(client, alice, applied):
    detail = reverse("policies:detail", args=[applied.pk])
    page = console(client, alice).get(detail).content.decode()
    assert "notify_channel: slack-ops\n</textarea>" in page  # prefilled with the YAML as applied

    response = client.post(
        reverse("policies:edit", args=[applied.pk]), {"yaml": EXAMPLE.replace("daily: 7", "daily: 10")}
    )

    assert response.status_code == 302 and response["Location"] == detail
    applied.refresh_from_db()
    assert applied.parsed.keep_daily == 10 and applied.applied_by == "alice"


def test_edit_shows_an_error_at_the_textarea_and_keeps_the_policy(client, alice, applied):
    response = console(client, alice).post(
        reverse("policies:edit", args=[applied.pk]), {"yaml": EXAMPLE + "colour: blue\n"}
    )

    assert response.status_code == 400
    assert "line 12: colour: unknown field" in response.content.decode()
    applied.refresh_from_db()
    assert applied.source == EXAMPLE


def test_an_operator_sees_no_forms_and_is_refused(client, operator, prod, applied):
    console(client, operator, prod)
    listing = client.get(LIST).content.decode()
    detail = client.get(reverse("policies:detail", args=[applied.pk])).content.decode()
    assert "acme-prod-default" in listing and "<textarea" not in listing and "<textarea" not in detail

    posted = client.post(APPLY, {"yaml": EXAMPLE.replace("daily: 7", "daily: 1")})
    assert posted.status_code == 403
    assert "manage_policies" in posted.content.decode()
    edited = client.post(reverse("policies:edit", args=[applied.pk]), {"yaml": EXAMPLE})
    assert edited.status_code == 403

    api = APIClient()
    api.force_authenticate(operator)
    answer = api.post("/api/v1/compute/snapshot-policies/apply/", {"project": "acme/prod", "yaml": EXAMPLE})
    assert answer.status_code == 403
    applied.refresh_from_db()
    assert applied.parsed.keep_daily == 7
    assert AuditEntry.objects.filter(action="policy.apply", outcome="refused", actor_name="olga").count() == 3


def test_an_outsider_gets_404_for_acme_policies(client, charlie, applied):
    console(client, charlie)
    for name in ("policies:detail", "policies:export"):
        assert client.get(reverse(name, args=[applied.pk])).status_code == 404
    assert client.post(reverse("policies:edit", args=[applied.pk]), {"yaml": EXAMPLE}).status_code == 404
    assert "acme-prod-default" not in client.get(LIST).content.decode()
    applied.refresh_from_db()
    assert applied.applied_by == "system"


def test_an_outsider_cannot_aim_the_apply_form_at_an_acme_project(client, charlie, prod):
    response = console(client, charlie).post(APPLY, {"project": str(prod.pk), "yaml": EXAMPLE})

    assert response.status_code == 404
    assert not Policy.objects.exists()


def test_preview_shows_what_the_policy_would_do_and_saves_nothing(client, snap_admin, prod, make_vm):
    from django.urls import reverse

    from policies.models import Policy

    make_vm(prod, "db-01", tags={"env": "prod"})
    client.force_login(snap_admin)
    response = client.post(
        reverse("policies:apply"), {"project": str(prod.pk), "yaml": EXAMPLE, "preview": "1"}
    )
    page = response.content.decode()
    assert response.status_code == 200 and "Preview: what this policy would do" in page and "db-01" in page
    assert not Policy.objects.exists()
