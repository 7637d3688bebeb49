"""Snapshots → Replication, its API and `/metrics`: what each shows, and who may read it (an outsider from
globex sees nothing of acme)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from policies import services as policies
from snapshots import replication_metrics
from snapshots.models import CopyFailure, Snapshot
from tests.api.test_api import api
from tests.policies.test_spec import EXAMPLE
from tests.snapshots.test_replication_metrics import copy_row

URL = "/api/v1/compute/replication/"
LAG_LINE = 'snap_replicate_lag_seconds{project="acme/prod",source_region="bd-dha-1",target_region="bd-ctg-1"}'


@pytest.fixture
def acme_copies(prod, image_stores):
    stalled = copy_row(prod, age_seconds=2400, name="db-01-dr")
    Snapshot.objects.filter(pk=stalled.pk).update(bytes_total=8 * 2**20, bytes_done=2 * 2**20)
    copy_row(prod, state=Snapshot.State.AVAILABLE, sent=3 * 2**20, name="landed-dr")
    replication_metrics.record_failure(stalled, "403 from bd-ctg-1")
    replication_metrics.meter(stalled, 3 * 2**20)
    return stalled


def test_the_page_shows_pairs_copies_links_and_usage(client, alice, acme_copies):
    client.force_login(alice)
    page = client.get(reverse("snapshots:replication")).content.decode()
    assert "bd-dha-1 → bd-ctg-1" in page and 'class="health health-alert"' in page
    assert "replication stalled: lag 24" in page and "1 failed copies in 24 h" in page
    assert "db-01-dr" in page and 'value="25"' in page  # 2 of 8 MiB
    assert "landed-dr" not in page.split('id="in-flight"')[1].split("</section>")[0]
    inter_region = page.split('id="inter-region"')[1]
    assert 'health-healthy">up' in inter_region and " ms</td>" in inter_region
    assert "3.0\xa0MB" in page and "0.00 USD" in page and "charged as inter-region transfer" in page
    assert 'aria-current="page">Replication' in page


def test_the_page_refreshes_its_own_fragment(client, alice, acme_copies):
    client.force_login(alice)
    fragment = client.get(reverse("snapshots:replication"), HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<div id="live"') and 'hx-trigger="every 10s"' in fragment
    assert "<html" not in fragment and "db-01-dr" in fragment


def test_page_queries_stay_the_same_with_a_thousand_copies(client, alice, prod, image_stores):
    client.force_login(alice)
    url = reverse("snapshots:replication")

    def queries(copies: int) -> int:
        Snapshot.objects.bulk_create(
            copy_row(prod, age_seconds=i, name=f"c{i}", sent=i, save=False) for i in range(copies)
        )
        CopyFailure.objects.bulk_create(
            CopyFailure(project=prod, source_region_id="bd-dha-1", target_region_id="bd-ctg-1", reason="x")
            for _ in range(copies)
        )
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    assert queries(10) == queries(990)


def test_an_outsider_sees_nothing_of_acme(client, charlie, globex_main, acme_copies, settings):
    client.force_login(charlie)
    page = client.get(reverse("snapshots:replication")).content.decode()
    assert "db-01-dr" not in page and "bd-dha-1 → bd-ctg-1" not in page
    refused = api(charlie).get(URL, {"project": "acme/prod"})
    assert refused.status_code == 400 and "no project 'acme/prod'" in str(refused.json())
    assert api(charlie).get(URL, {"project": "globex/main"}).json()["pairs"] == []
    assert client.get("/metrics").status_code == 404


def test_the_api_answers_the_same_numbers(alice, acme_copies):
    answer = api(alice).get(URL, {"project": "acme/prod"})
    assert answer.status_code == 200, answer.content
    data = answer.json()
    (pair,) = data["pairs"]
    assert pair["status"] == "alert" and pair["failures_24h"] == 1 and pair["bytes_24h"] == 3 * 2**20
    assert 2399 <= pair["lag_seconds"] <= 2402 and pair["pending"] == 1
    assert [c["name"] for c in data["in_flight"]] == ["db-01-dr"] and data["in_flight"][0]["percent"] == 25
    assert data["usage"][0]["bytes_sent"] == 3 * 2**20 and data["price_per_gib"] == "0.0200"
    assert api(alice).get(URL, {"project": "acme/prod", "region": "nowhere"}).status_code == 400
    assert api(alice).get(URL).status_code == 400
    assert b"/api/v1/compute/replication/" in api(alice).get("/api/v1/schema/").content


def test_metrics_need_the_scrape_token_or_platform_staff(
    client, alice, acme_copies, settings, django_user_model
):
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    assert client.get("/metrics").status_code == 404  # anonymous
    client.force_login(alice)  # an account admin, not platform staff
    assert client.get("/metrics").status_code == 404
    client.logout()
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 404
    scraped = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert scraped.status_code == 200 and scraped["Content-Type"].startswith("text/plain")
    text = scraped.content.decode()
    assert f"{LAG_LINE} 24" in text
    assert "snap_replicate_failures_24h{" in text and "} 1.0" in text
    assert "# TYPE snap_replicate_bytes_sent_total counter" in text
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404  # no token configured
    staff = django_user_model.objects.create_user("sre", is_staff=True)
    client.force_login(staff)
    assert LAG_LINE in client.get("/metrics").content.decode()


def test_the_policy_page_shows_the_projects_replication(client, alice, prod, acme_copies):
    policy = policies.apply_policy(actor=None, project=prod, text=EXAMPLE)
    client.force_login(alice)
    page = client.get(reverse("policies:detail", args=[policy.pk])).content.decode()
    section = page.split('id="replication"')[1].split("</section>")[0]
    assert "bd-dha-1 → bd-ctg-1" in section and "health-alert" in section


def test_a_copys_page_shows_its_charge(client, alice, acme_copies):
    Snapshot.objects.filter(pk=acme_copies.pk).update(bytes_sent=3 * 2**30)
    client.force_login(alice)
    page = client.get(reverse("snapshots:detail", args=[acme_copies.pk])).content.decode()
    assert "0.06 USD" in page and "3.000 GiB sent, charged as inter-region transfer" in page
    assert "This copy" not in page  # failed once, but it is Creating: not set aside


def test_diagnose_in_the_api_and_cli_names_a_copy_set_aside(alice, acme_copies):
    Snapshot.objects.filter(pk=acme_copies.pk).update(state=Snapshot.State.ERROR, last_error="403")
    replication_metrics.record_failure(acme_copies, "403")
    answer = api(alice).get(f"/api/v1/compute/snapshots/{acme_copies.pk}/diagnose/")
    assert answer.status_code == 200 and "This copy keeps failing" in answer.content.decode()
    assert "2 failed attempts; last: 403" in answer.content.decode()
