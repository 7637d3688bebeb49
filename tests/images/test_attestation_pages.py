"""Console pages for CIS attestation: signing keys, signing on an image's page, the image policy."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import pytest
from django.test import Client
from django.urls import reverse

from clouddigit.audit.models import AuditEntry
from images import attestation
from images.models import Attestation, Image, ImagePolicy, SigningKey


@pytest.fixture
def image(cis_image):
    return cis_image


def page(client, url, status=200) -> str:
    """What the user reads: the page's text without its markup."""
    response = client.get(url)
    assert response.status_code == status
    return html.unescape(re.sub(r"<[^>]+>", "", response.content.decode()))


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_register_a_key_by_pasting_it(dana, key_pair):
    client = as_user(dana)
    assert "Register your public key" in page(client, reverse("iam:signing-keys"))
    url = reverse("iam:signing-key-register")
    response = client.post(url, {"account": "acme", "name": "dana-laptop", "public_key": key_pair[1]})
    assert response.status_code == 302
    assert SigningKey.objects.get().owner == dana
    listed = page(client, reverse("iam:signing-keys"))
    assert "dana-laptop" in listed and "Revoke" in listed


def test_a_bad_key_shows_the_expected_formats(dana):
    response = as_user(dana).post(
        reverse("iam:signing-key-register"),
        {"account": "acme", "name": "k", "public_key": "ssh-ed25519 AAAA"},
    )
    assert response.status_code == 400
    text = html.unescape(response.content.decode())
    assert "The key is neither base64 nor PEM" in text
    assert "raw 32-byte key in base64" in text


def test_publisher_sees_no_register_form_and_cannot_revoke(bob, alice, dana_key):
    text = page(as_user(bob), reverse("iam:signing-keys"))
    assert "Register your public key" not in text and "dana-laptop" not in text
    assert as_user(bob).post(reverse("iam:signing-key-revoke", args=[dana_key.pk])).status_code == 404
    assert "dana-laptop" in page(as_user(alice), reverse("iam:signing-keys"))
    revoked = as_user(alice).post(reverse("iam:signing-key-revoke", args=[dana_key.pk]), {"confirmed": "yes"})
    assert revoked.status_code == 302
    dana_key.refresh_from_db()
    assert dana_key.revoked_by == "alice"


def test_image_page_shows_status_and_signs_with_a_pasted_signature(dana, image, dana_key, key_pair):
    client = as_user(dana)
    url = reverse("images:detail", args=[image.pk])
    text = page(client, url)
    assert "Not attested: it has no CIS attestation." in text
    assert f"printf 'clouddigit-image-attestation/v1\\n%s\\n%s\\n%s\\n' {image.sha256} 1 dana" in text
    signature = attestation.sign(key_pair[0], image.sha256, "1", "dana")
    response = client.post(
        reverse("images:attest", args=[image.pk]), {"key": dana_key.pk, "signature": signature}
    )
    assert response.status_code == 302
    assert "Attested: signed by dana with key dana-laptop" in page(client, url)


def test_a_wrong_signature_is_shown_at_the_form(dana, image, dana_key):
    other_private, _ = attestation.generate_key_pair()
    signature = attestation.sign(other_private, image.sha256, "1", "dana")
    response = as_user(dana).post(
        reverse("images:attest", args=[image.pk]), {"key": dana_key.pk, "signature": signature}
    )
    assert response.status_code == 400
    assert "The signature does not verify with key dana-laptop" in html.unescape(response.content.decode())
    assert not Attestation.objects.exists()


def test_publisher_sees_the_status_but_no_sign_form(bob, image):
    text = page(as_user(bob), reverse("images:detail", args=[image.pk]))
    assert "Not attested" in text and "Sign this image" not in text
    response = as_user(bob).post(reverse("images:attest", args=[image.pk]), {"key": "x", "signature": "y"})
    assert response.status_code == 400
    assert AuditEntry.objects.filter(action="image.attest", outcome="refused", actor_name="bob").exists()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_openssl_recipe_on_the_page_makes_a_valid_signature(dana, image, dana_key, key_pair, tmp_path):
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(key_pair[0])
    recipe = (
        f"printf 'clouddigit-image-attestation/v1\\n%s\\n%s\\n%s\\n' {image.sha256} 1 dana > message.txt\n"
        "openssl pkeyutl -sign -rawin -inkey key.pem -in message.txt | base64 -w0"
    )
    assert recipe in page(as_user(dana), reverse("images:detail", args=[image.pk]))
    signature = subprocess.run(["sh", "-c", recipe], cwd=tmp_path, capture_output=True, check=True, text=True)
    made = attestation.attest_image(actor=dana, image=image, key=dana_key, signature=signature.stdout)
    assert attestation.attestation_status(image)[0] == made


def test_policy_page_sets_the_policy_and_lists_what_it_would_deny(
    alice, bob, prod, image, django_assert_max_num_queries
):
    client = as_user(alice)
    url = f"{reverse('images:policy')}?project={prod.pk}"
    with django_assert_max_num_queries(25):
        text = page(client, url)
    assert (
        "CIS attestation: Not required" in text and "web-cis" in text and "it has no CIS attestation" in text
    )
    response = client.post(reverse("images:policy-set"), {"project": prod.pk, "attestation": "audit"})
    assert response.status_code == 302
    assert ImagePolicy.objects.get(project=prod).require_attestation == "audit"
    assert "Audit: record what would be denied" in page(client, url)

    bob_page = page(as_user(bob), url)
    assert "web-cis" in bob_page and "Save policy" not in bob_page
    refused = as_user(bob).post(reverse("images:policy-set"), {"project": prod.pk, "attestation": "off"})
    assert refused.status_code == 403
    assert ImagePolicy.objects.get(project=prod).require_attestation == "audit"


def test_policy_page_would_deny_list_has_no_n_plus_one(alice, prod, dha, django_assert_max_num_queries):
    for n in range(30):
        Image.objects.create(
            project=prod,
            region=dha,
            name=f"img-{n}",
            state=Image.State.AVAILABLE,
            sha256="a" * 64,
            created_by="t",
        )
    client = as_user(alice)
    url = f"{reverse('images:policy')}?project={prod.pk}"
    page(client, url)
    with django_assert_max_num_queries(25):
        assert "img-29" in page(client, url)
