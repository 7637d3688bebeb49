"""`clouddigit iam signing-key ...` and `clouddigit compute image sign|attestation|policy|would-deny`
against a live server, with real Ed25519 keys made and used on the "attestor's machine" (tmp_path)."""

from __future__ import annotations

import json
import stat

import pytest

from clouddigit import signing
from images import attestation
from images.models import Attestation, ImagePolicy, SigningKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def image(cis_image):
    return cis_image


def ok(result):
    assert result.code == 0, result.err
    return result


def create_key(cli, user, path, name="dana-laptop"):
    return cli(user, "iam", "signing-key", "create", "--account", "acme", "--name", name, "--out", str(path))


def test_create_writes_a_private_key_0600_and_registers_its_public_half(cli, dana, tmp_path):
    path = tmp_path / "key.pem"
    result = ok(create_key(cli, dana, path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    key = SigningKey.objects.get()
    assert (key.name, key.owner, key.account.slug) == ("dana-laptop", dana, "acme")
    assert signing.public_key_of(path.read_bytes()) == key.public_key
    assert "dana-laptop" in result.out and "0600" in result.err

    again = create_key(cli, dana, path, name="second")
    assert again.code == 1 and "ERROR: FileExists" in again.err
    assert SigningKey.objects.count() == 1


def test_refused_registration_leaves_no_private_key_behind(cli, bob, tmp_path):
    path = tmp_path / "key.pem"
    result = create_key(cli, bob, path)
    assert result.code == 1 and "ERROR: PermissionDenied" in result.err and "image.cis-attestor" in result.err
    assert not path.exists()


def test_register_an_openssl_style_pem_public_key(cli, dana, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    pem = tmp_path / "pub.pem"
    pem.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ok(
        cli(
            dana,
            "iam",
            "signing-key",
            "create",
            "--account",
            "acme",
            "--name",
            "ossl",
            "--public-key",
            str(pem),
        )
    )
    assert SigningKey.objects.get().name == "ossl"


def test_sign_attests_the_image_and_status_shows_it(cli, dana, image, tmp_path):
    path = tmp_path / "key.pem"
    ok(create_key(cli, dana, path))
    signed = ok(
        cli(dana, "compute", "image", "sign", "web-cis", "--key-name", "dana-laptop", "--key-file", str(path))
    )
    made = Attestation.objects.get()
    assert (made.signer, made.cis_level, made.image_sha256) == ("dana", "1", image.sha256)
    assert str(made.id) in signed.out

    status = json.loads(ok(cli(dana, "compute", "image", "attestation", "web-cis", "-o", "json")).out)
    assert status["valid"] and status["attestation"]["id"] == str(made.id)
    text = ok(cli(dana, "compute", "image", "attestation", "web-cis")).out
    assert "ATTESTATION  valid" in text and "dana-laptop" in text


def test_sign_with_the_wrong_key_file_is_caught_before_sending(cli, dana, image, tmp_path):
    ok(create_key(cli, dana, tmp_path / "key.pem"))
    other, _ = attestation.generate_key_pair()
    (tmp_path / "other.pem").write_bytes(other)
    (tmp_path / "other.pem").chmod(0o600)
    result = cli(
        dana,
        "compute",
        "image",
        "sign",
        "web-cis",
        "--key-name",
        "dana-laptop",
        "--key-file",
        str(tmp_path / "other.pem"),
    )
    assert result.code == 1 and "ERROR: KeyMismatch" in result.err
    assert not Attestation.objects.exists()


def test_sign_an_image_without_cis_level_says_to_tag_it(cli, dana, image, tmp_path):
    image.tags = {}
    image.save()
    ok(create_key(cli, dana, tmp_path / "key.pem"))
    result = cli(
        dana,
        "compute",
        "image",
        "sign",
        "web-cis",
        "--key-name",
        "dana-laptop",
        "--key-file",
        str(tmp_path / "key.pem"),
    )
    assert result.code == 1 and "ERROR: MissingCisLevel" in result.err and "--tag cis-level=1" in result.err


def test_revoked_key_makes_the_image_unattested(cli, dana, image, tmp_path):
    path = tmp_path / "key.pem"
    ok(create_key(cli, dana, path))
    ok(cli(dana, "compute", "image", "sign", "web-cis", "--key-name", "dana-laptop", "--key-file", str(path)))
    ok(cli(dana, "iam", "signing-key", "revoke", "dana-laptop", "--account", "acme"))
    status = json.loads(ok(cli(dana, "compute", "image", "attestation", "web-cis", "-o", "json")).out)
    assert not status["valid"] and "was revoked on" in status["reason"]
    listed = json.loads(ok(cli(dana, "iam", "signing-key", "list", "--revoked", "true", "-o", "json")).out)
    assert [key["name"] for key in listed] == ["dana-laptop"]


def test_policy_set_and_would_deny(cli, alice, bob, prod, image):
    shown = json.loads(
        ok(cli(alice, "compute", "image", "policy", "--project", "acme/prod", "-o", "json")).out
    )
    assert shown["attestation"] == "off"
    refused = cli(bob, "compute", "image", "policy", "--project", "acme/prod", "--attestation", "enforce")
    assert refused.code == 1 and "ERROR: PermissionDenied" in refused.err
    ok(cli(alice, "compute", "image", "policy", "--project", "acme/prod", "--attestation", "enforce"))
    assert ImagePolicy.objects.get(project=prod).require_attestation == "enforce"
    denied = ok(cli(bob, "compute", "image", "would-deny", "--project", "acme/prod")).out
    assert denied == f"web-cis ({image.id}) of acme/prod in bd-dha-1: it has no CIS attestation\n"
