from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from clouddigit.compute.models import VM


@pytest.fixture
def fleet(make_vm, prod, sandbox, globex_main, ctg):
    make_vm(prod, "db-01", tags={"env": "prod", "role": "db"})
    make_vm(prod, "web-01", tags={"env": "prod", "role": "web"})
    make_vm(prod, "batch-01", region=ctg, flavor="bm-c1", tags={"env": "prod"})
    make_vm(sandbox, "dev-01", tags={"env": "dev"})
    make_vm(globex_main, "gx-app-01", tags={"env": "prod"})


def test_anonymous_is_sent_to_login(client, fleet):
    response = client.get(reverse("compute:vm-list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_login_page_signs_in(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-pass"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("compute:vm-list")
    assert b"Sign out" in response.content


def test_vm_list_shows_the_current_project_only(client, alice, fleet):
    client.force_login(alice)
    html = client.get(reverse("compute:vm-list")).content.decode()
    assert "db-01" in html and "batch-01" in html
    assert "dev-01" not in html and "gx-app-01" not in html


def test_switching_project_and_region(client, alice, fleet, sandbox):
    client.force_login(alice)
    client.post(reverse("switch-scope"), {"project": str(sandbox.pk), "next": reverse("compute:vm-list")})
    assert "dev-01" in client.get(reverse("compute:vm-list")).content.decode()

    client.post(reverse("switch-scope"), {"region": "bd-ctg-1"})
    html = client.get(reverse("compute:vm-list")).content.decode()
    assert "dev-01" not in html  # dev-01 is in bd-dha-1


def test_switching_to_a_project_of_another_account_is_ignored(client, charlie, fleet, prod):
    client.force_login(charlie)
    client.post(reverse("switch-scope"), {"project": str(prod.pk)})
    html = client.get(reverse("compute:vm-list")).content.decode()
    assert "gx-app-01" in html and "db-01" not in html


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ("tag=role=db", ["db-01"], ["web-01", "batch-01"]),
        ("flavor=bm-c1", ["batch-01"], ["db-01"]),
        ("name=web", ["web-01"], ["db-01"]),
        ("state=running", [], ["db-01", "web-01"]),
    ],
)
def test_vm_list_filters(client, alice, fleet, query, shown, hidden):
    client.force_login(alice)
    html = client.get(reverse("compute:vm-list") + "?" + query).content.decode()
    for name in shown:
        assert name in html
    for name in hidden:
        assert name not in html


def test_a_bad_tag_filter_says_what_is_wrong(client, alice, fleet):
    client.force_login(alice)
    html = client.get(reverse("compute:vm-list") + "?tag=nonsense").content.decode()
    assert "must look like key=value" in html


def test_htmx_request_gets_only_the_table(client, alice, fleet):
    client.force_login(alice)
    response = client.get(reverse("compute:vm-list") + "?name=db", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="table">')
    assert "db-01" in html and "<nav" not in html.split('<div id="table">')[0]


def test_outsider_gets_404_on_details(client, charlie, fleet):
    client.force_login(charlie)
    vm = VM.objects.get(name="db-01")
    assert client.get(reverse("compute:vm-detail", args=[vm.pk])).status_code == 404
    assert client.get(reverse("compute:volume-detail", args=[vm.volumes.get().pk])).status_code == 404
    assert client.post(reverse("compute:vm-start", args=[vm.pk])).status_code == 404
    vm.refresh_from_db()
    assert vm.state == VM.State.STOPPED


def test_vm_detail_and_start_from_the_console(client, alice, fleet, django_capture_on_commit_callbacks):
    client.force_login(alice)
    vm = VM.objects.get(name="db-01")
    html = client.get(reverse("compute:vm-detail", args=[vm.pk])).content.decode()
    assert "vda" in html and "std-2x4" in html and ">Start<" in html

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("compute:vm-start", args=[vm.pk]), follow=True)
    assert "Starting" in response.content.decode()  # the worker runs once the request has committed
    vm.refresh_from_db()
    assert vm.state == VM.State.RUNNING


def test_polling_stops_once_the_vm_settled(client, alice, fleet):
    client.force_login(alice)
    vm = VM.objects.get(name="db-01")
    response = client.get(reverse("compute:vm-detail", args=[vm.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 286
    assert 'id="power"' in response.content.decode()


def test_a_viewer_sees_no_power_buttons(client, bob, fleet):
    client.force_login(bob)
    vm = VM.objects.get(name="db-01")
    html = client.get(reverse("compute:vm-detail", args=[vm.pk])).content.decode()
    assert ">Start<" not in html


def test_volume_detail_shows_the_qcow2_chain(client, alice, fleet):
    client.force_login(alice)
    volume = VM.objects.get(name="db-01").volumes.get()
    html = client.get(reverse("compute:volume-detail", args=[volume.pk])).content.decode()
    assert Path(volume.path).name in html and "1.0\xa0GB" in html
    assert volume.path not in html  # the file's name, not where the host keeps it


def test_volume_list_filters_by_attached_vm(client, alice, fleet):
    client.force_login(alice)
    html = client.get(reverse("compute:volume-list") + "?vm=web-01").content.decode()
    assert "web-01-boot" in html and "db-01-boot" not in html


@pytest.mark.parametrize("url_name", ["compute:vm-list", "compute:volume-list"])
def test_list_pages_run_a_constant_number_of_queries(
    client, alice, prod, make_vm, django_assert_max_num_queries, url_name
):
    client.force_login(alice)
    make_vm(prod, "vm-0")
    client.get(reverse(url_name))  # warm the session
    with django_assert_max_num_queries(12) as few:
        client.get(reverse(url_name))
    for index in range(1, 25):
        make_vm(prod, f"vm-{index}", tags={"n": str(index)})
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(reverse(url_name))
