"""Retry and delete of a failed or lost image operation (import, promotion, copy) from the image's page."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from clouddigit.audit.models import AuditEntry
from iam.services import grant_role
from images.models import Image

NO_SPACE = "qemu-img convert: No space left on device"


def _image(project, region, name="db-base", **fields) -> Image:
    defaults = {
        "slot": Image.Slot.CUSTOM,
        "source": Image.Source.SNAPSHOT,
        "state": Image.State.FAILED,
        "last_error": NO_SPACE,
        "created_by": "alice",
    }
    return Image.objects.create(project=project, region=region, name=name, **{**defaults, **fields})


def _urls(image: Image) -> tuple[str, str, str]:
    return (
        reverse("images:detail", args=[image.pk]),
        reverse("images:retry", args=[image.pk]),
        reverse("images:delete", args=[image.pk]),
    )


def test_a_failed_promotion_shows_why_and_its_owner_retries_it(client, alice, prod, dha):
    image = _image(prod, dha)
    detail, retry_url, delete_url = _urls(image)
    client.force_login(alice)
    page = client.get(detail).content.decode()
    assert NO_SPACE in page
    assert f'action="{retry_url}"' in page
    assert f'hx-post="{delete_url}" hx-confirm="Delete image db-base? VMs created' in page

    response = client.post(retry_url)  # the queued step is not run here: no worker
    assert response["Location"] == detail
    image.refresh_from_db()
    assert (image.state, image.last_error, image.step) == (Image.State.PROCESSING, "", "queued again")
    assert AuditEntry.objects.filter(action="image.retry", outcome="success").exists()
    page = client.get(detail).content.decode()
    assert "Queued db-base again" in page and retry_url not in page and delete_url not in page


def test_a_failed_upload_offers_delete_but_not_retry(client, alice, prod, dha):
    image = _image(
        prod, dha, source=Image.Source.UPLOAD, last_error="format 'qcow2' but file has VMDK signature"
    )
    detail, retry_url, delete_url = _urls(image)
    client.force_login(alice)
    page = client.get(detail).content.decode()
    assert "VMDK signature" in page and retry_url not in page and f'hx-post="{delete_url}"' in page


def test_a_lost_image_offers_retry_and_delete(client, alice, prod, dha):
    lost = _image(
        prod,
        dha,
        state=Image.State.PROCESSING,
        last_error="",
        step="convert vmdk to qcow2",
        claimed_by="host:1:abc",
        lease_until=timezone.now() - timedelta(minutes=2),
    )
    queued = _image(prod, dha, "web-base", state=Image.State.PROCESSING, last_error="", step="queued")
    queued.lease_until = timezone.now() + timedelta(minutes=2)
    queued.save()
    client.force_login(alice)
    detail, retry_url, delete_url = _urls(lost)
    page = client.get(detail).content.decode()
    assert "worker stopped answering" in page and retry_url in page and delete_url in page

    response = client.post(delete_url, {"confirmed": "yes"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 204 and response["HX-Location"] == reverse("images:catalogue")
    assert not Image.objects.filter(pk=lost.pk).exists()

    detail, retry_url, delete_url = _urls(queued)
    page = client.get(detail).content.decode()
    assert retry_url not in page and delete_url not in page


def test_an_image_viewer_sees_the_reason_but_no_buttons(client, django_user_model, prod, dha):
    django_user_model.objects.create_user("vic")
    grant_role(actor=None, role="image.viewer", account=prod.account, project=prod, username="vic")
    image = _image(prod, dha)
    detail, retry_url, delete_url = _urls(image)
    client.force_login(django_user_model.objects.get(username="vic"))
    page = client.get(detail).content.decode()
    assert NO_SPACE in page and retry_url not in page and delete_url not in page
    refused = client.post(retry_url, follow=True)
    assert "You may not retry image db-base" in refused.content.decode()
    assert Image.objects.get(pk=image.pk).state == Image.State.FAILED


def test_an_outsider_gets_404_for_an_image_retry(client, charlie, prod, dha):
    image = _image(prod, dha)
    client.force_login(charlie)
    assert client.post(reverse("images:retry", args=[image.pk])).status_code == 404
    assert Image.objects.get(pk=image.pk).state == Image.State.FAILED
