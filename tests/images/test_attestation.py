"""CIS attestations through the services, with real Ed25519 keys and signatures."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from clouddigit.audit.models import AuditEntry
from clouddigit.errors import Conflict, InvalidRequest, PermissionRefused
from iam.services import grant_role
from images import attestation
from images.attestation import AttestationInvalid, AttestationRequired
from images.models import Image, ImagePolicy, SigningKey

IMAGE_BYTES = b"a small stand-in for a qcow2 file\n" * 100
IMAGE_SHA256 = hashlib.sha256(IMAGE_BYTES).hexdigest()


@pytest.fixture
def erin(django_user_model, acme, prod):
    """A second CIS attestor in acme/prod."""
    django_user_model.objects.create_user("erin")
    grant_role(actor=None, role="image.cis-attestor", account=acme, project=prod, username="erin")
    return django_user_model.objects.get(username="erin")


@pytest.fixture
def image(prod, dha):
    return Image.objects.create(
        project=prod,
        region=dha,
        name="web-cis",
        state=Image.State.AVAILABLE,
        sha256=IMAGE_SHA256,
        tags={"cis-level": "1"},
        created_by="t",
    )


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "web-cis.qcow2"
    path.write_bytes(IMAGE_BYTES)
    return path


def signed(dana, image, dana_key, key_pair):
    private, _ = key_pair
    signature = attestation.sign(private, image.sha256, image.cis_level, dana.username)
    return attestation.attest_image(actor=dana, image=image, key=dana_key, signature=signature)


# --- Keys -------------------------------------------------------------------------------------------


def test_register_raw_key_stores_base64_and_fingerprint(dana, acme, key_pair):
    _, public = key_pair
    key = attestation.register_key(actor=dana, account=acme, name="dana-laptop", public_key=public)
    assert key.owner == dana
    assert key.public_key == public
    assert key.fingerprint == hashlib.sha256(base64.b64decode(public)).hexdigest()
    assert AuditEntry.objects.filter(action="image.signing-key.register", target_id=str(key.pk)).exists()


def test_register_pem_key_stores_the_raw_key(dana, acme):
    private = Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = attestation.register_key(actor=dana, account=acme, name="from-openssl", public_key=pem.decode())
    assert key.public_key == base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "text, says",
    [
        ("not a key at all", "neither base64 nor PEM"),
        (base64.b64encode(b"x" * 31).decode(), "31 bytes long"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "could not be read"),
    ],
)
def test_bad_key_says_which_formats_are_accepted(dana, acme, text, says):
    with pytest.raises(InvalidRequest) as refused:
        attestation.register_key(actor=dana, account=acme, name="k", public_key=text)
    assert says in refused.value.message
    assert "raw 32-byte key in base64" in refused.value.message
    assert "-----BEGIN PUBLIC KEY-----" in refused.value.message
    assert not SigningKey.objects.exists()


def test_rsa_key_is_refused_as_not_ed25519(dana, acme):
    rsa = generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = rsa.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(InvalidRequest, match="RSA key, not an Ed25519 key"):
        attestation.register_key(actor=dana, account=acme, name="k", public_key=pem.decode())


def test_pasted_private_key_is_refused_and_not_logged(dana, acme, key_pair):
    private, _ = key_pair
    with pytest.raises(InvalidRequest, match="That is a private key"):
        attestation.register_key(actor=dana, account=acme, name="k", public_key=private.decode())
    entry = AuditEntry.objects.get(action="image.signing-key.register")
    assert entry.outcome == AuditEntry.Outcome.REFUSED
    assert "PRIVATE KEY" not in str(entry.detail)


def test_same_key_or_name_twice_is_a_conflict(dana, acme, dana_key, key_pair):
    _, public = key_pair
    with pytest.raises(Conflict, match="already registered as 'dana-laptop'"):
        attestation.register_key(actor=dana, account=acme, name="other", public_key=public)
    _, other_public = attestation.generate_key_pair()
    with pytest.raises(Conflict, match="named 'dana-laptop' already exists"):
        attestation.register_key(actor=dana, account=acme, name="dana-laptop", public_key=other_public)


def test_publisher_and_outsider_cannot_register_keys(bob, charlie, acme, key_pair):
    _, public = key_pair
    for person in (bob, charlie):
        with pytest.raises(PermissionRefused, match="image.cis-attestor"):
            attestation.register_key(actor=person, account=acme, name="k", public_key=public)
    assert not SigningKey.objects.exists()


def test_owner_or_role_granter_revokes_a_key(dana, bob, alice, acme, key_pair):
    _, public = key_pair
    key = attestation.register_key(actor=dana, account=acme, name="k1", public_key=public)
    with pytest.raises(PermissionRefused, match="only its owner"):
        attestation.revoke_key(actor=bob, key=key)
    attestation.revoke_key(actor=alice, key=key)
    key.refresh_from_db()
    assert key.revoked and key.revoked_by == "alice"
    with pytest.raises(Conflict, match="already revoked"):
        attestation.revoke_key(actor=dana, key=key)


def test_keys_visible_to_attestors_and_admins_only(dana, alice, bob, charlie, dana_key):
    assert list(attestation.keys_visible_to(dana)) == [dana_key]
    assert list(attestation.keys_visible_to(alice)) == [dana_key]
    assert not attestation.keys_visible_to(bob).exists()
    assert not attestation.keys_visible_to(charlie).exists()


# --- Attesting --------------------------------------------------------------------------------------


def test_valid_signature_is_stored_and_counts(dana, image, dana_key, key_pair):
    made = signed(dana, image, dana_key, key_pair)
    assert (made.signer, made.image_sha256, made.cis_level) == ("dana", IMAGE_SHA256, "1")
    assert attestation.attestation_status(image) == (made, "")
    assert attestation.attestation_status(image, IMAGE_SHA256) == (made, "")
    entry = AuditEntry.objects.get(action="image.attest")
    assert (entry.outcome, entry.target_id, entry.project) == (
        AuditEntry.Outcome.SUCCESS,
        str(image.pk),
        image.project,
    )


def test_message_is_the_documented_v1_bytes():
    assert attestation.message("ab12", "2", "dana") == b"clouddigit-image-attestation/v1\nab12\n2\ndana\n"
    with pytest.raises(ValueError):
        attestation.message("ab12", "1\nextra", "dana")


def test_signature_from_another_private_key_is_refused(dana, image, dana_key):
    other_private, _ = attestation.generate_key_pair()
    signature = attestation.sign(other_private, image.sha256, "1", "dana")
    with pytest.raises(AttestationInvalid, match="does not verify with key dana-laptop"):
        attestation.attest_image(actor=dana, image=image, key=dana_key, signature=signature)
    assert not image.attestations.exists()
    assert AuditEntry.objects.get(action="image.attest").outcome == AuditEntry.Outcome.REFUSED


def test_signature_naming_another_signer_is_refused(dana, image, dana_key, key_pair):
    private, _ = key_pair
    signature = attestation.sign(private, image.sha256, "1", "alice")
    with pytest.raises(AttestationInvalid, match="signer dana"):
        attestation.attest_image(actor=dana, image=image, key=dana_key, signature=signature)


def test_signing_with_someone_elses_key_is_refused(dana, erin, image, dana_key, key_pair):
    private, _ = key_pair
    signature = attestation.sign(private, image.sha256, "1", "erin")
    with pytest.raises(PermissionRefused, match="is not yours"):
        attestation.attest_image(actor=erin, image=image, key=dana_key, signature=signature)


def test_garbage_signature_says_what_a_signature_is(dana, image, dana_key):
    with pytest.raises(AttestationInvalid, match="64 bytes, base64"):
        attestation.attest_image(actor=dana, image=image, key=dana_key, signature="c2lnbmF0dXJl")


def test_publisher_cannot_attest(bob, image, dana_key, key_pair):
    private, _ = key_pair
    signature = attestation.sign(private, image.sha256, "1", "bob")
    with pytest.raises(PermissionRefused, match="attest_images"):
        attestation.attest_image(actor=bob, image=image, key=dana_key, signature=signature)


def test_image_without_cis_level_must_be_tagged_first(dana, image, dana_key, key_pair):
    image.tags = {"os-family": "ubuntu"}
    image.save()
    private, _ = key_pair
    with pytest.raises(InvalidRequest, match="has no cis-level tag. Tag it first"):
        attestation.attest_image(
            actor=dana,
            image=image,
            key=dana_key,
            signature=attestation.sign(private, image.sha256, "", "dana"),
        )


def test_revoked_key_cannot_sign_and_its_attestations_stop_counting(dana, image, dana_key, key_pair):
    made = signed(dana, image, dana_key, key_pair)
    attestation.revoke_key(actor=dana, key=dana_key)
    dana_key.refresh_from_db()
    found, reason = attestation.attestation_status(image)
    assert found is None
    assert reason.startswith("signing key dana-laptop") and "was revoked on" in reason
    private, _ = key_pair
    with pytest.raises(AttestationInvalid, match="was revoked"):
        attestation.attest_image(
            actor=dana,
            image=image,
            key=dana_key,
            signature=attestation.sign(private, IMAGE_SHA256, "1", "dana"),
        )
    assert made.pk  # kept as history


def test_changed_cis_level_invalidates(dana, image, dana_key, key_pair):
    signed(dana, image, dana_key, key_pair)
    image.tags = {"cis-level": "2"}
    image.save()
    assert attestation.attestation_status(image) == (
        None,
        "cis-level changed from 1 to 2 since it was signed",
    )


def test_changed_bytes_invalidate(dana, image, dana_key, key_pair):
    signed(dana, image, dana_key, key_pair)
    image.sha256 = "0" * 64
    image.save()
    found, reason = attestation.attestation_status(image)
    assert found is None
    assert (
        reason
        == f"the image's bytes changed since it was signed (SHA-256 {'0' * 64} ≠ signed {IMAGE_SHA256})"
    )


def test_file_with_other_bytes_invalidates(dana, image, dana_key, key_pair):
    signed(dana, image, dana_key, key_pair)
    found, reason = attestation.attestation_status(image, "f" * 64)
    assert found is None
    assert "the image file's bytes differ from the signed ones" in reason


def test_tampered_row_does_not_count(dana, image, dana_key, key_pair):
    made = signed(dana, image, dana_key, key_pair)
    made.signer = "mallory"
    made.save()
    found, reason = attestation.attestation_status(image)
    assert found is None and "does not verify" in reason


def test_newest_valid_attestation_wins(dana, erin, acme, image, dana_key, key_pair):
    first = signed(dana, image, dana_key, key_pair)
    erin_private, erin_public = attestation.generate_key_pair()
    erin_key = attestation.register_key(actor=erin, account=acme, name="erin-key", public_key=erin_public)
    second = attestation.attest_image(
        actor=erin,
        image=image,
        key=erin_key,
        signature=attestation.sign(erin_private, IMAGE_SHA256, "1", "erin"),
    )
    assert attestation.attestation_status(image)[0] == second
    attestation.revoke_key(actor=erin, key=erin_key)
    assert attestation.attestation_status(image)[0] == first


def test_no_attestation_reason(image):
    assert attestation.attestation_status(image) == (None, "it has no CIS attestation")


# --- Policy and launch ------------------------------------------------------------------------------


def test_set_policy_needs_manage_image_quotas(alice, bob, prod):
    with pytest.raises(PermissionRefused):
        attestation.set_policy(actor=bob, project=prod, mode="enforce")
    with pytest.raises(InvalidRequest, match="one of off, audit, enforce"):
        attestation.set_policy(actor=alice, project=prod, mode="strict")
    policy = attestation.set_policy(actor=alice, project=prod, mode="enforce")
    assert (policy.require_attestation, policy.updated_by) == ("enforce", "alice")
    assert attestation.policy_mode(prod) == ImagePolicy.Attestation.ENFORCE


def test_enforce_denies_unsigned_image_with_reason_and_fix(alice, prod, image, image_file):
    attestation.set_policy(actor=alice, project=prod, mode="enforce")
    with pytest.raises(AttestationRequired) as denied:
        attestation.check_launch(
            actor=alice, image=image, project=prod, vm_name="web-1", image_file=image_file
        )
    assert denied.value.status == 403
    text = denied.value.message
    assert "image web-cis" in text and "it has no CIS attestation" in text
    assert "clouddigit compute image sign" in text and "switch its image policy" in text


def test_enforce_allows_signed_image(alice, dana, prod, image, image_file, dana_key, key_pair):
    signed(dana, image, dana_key, key_pair)
    attestation.set_policy(actor=alice, project=prod, mode="enforce")
    attestation.check_launch(actor=alice, image=image, project=prod, vm_name="web-1", image_file=image_file)


def test_enforce_denies_when_the_file_differs_from_the_signed_bytes(
    alice, dana, prod, image, image_file, dana_key, key_pair
):
    signed(dana, image, dana_key, key_pair)
    image_file.write_bytes(b"tampered" + IMAGE_BYTES)
    attestation.set_policy(actor=alice, project=prod, mode="enforce")
    with pytest.raises(AttestationRequired, match="the image file's bytes differ"):
        attestation.check_launch(
            actor=alice, image=image, project=prod, vm_name="web-1", image_file=image_file
        )


def test_audit_records_what_would_be_denied_and_lets_the_launch_go_on(alice, prod, image, image_file):
    attestation.set_policy(actor=alice, project=prod, mode="audit")
    attestation.check_launch(actor=alice, image=image, project=prod, vm_name="web-1", image_file=image_file)
    entry = AuditEntry.objects.get(action="image.attestation.would-deny")
    assert entry.outcome == AuditEntry.Outcome.SUCCESS
    assert (entry.target_type, entry.target_id, entry.project, entry.actor_name) == (
        "image",
        str(image.pk),
        prod,
        "alice",
    )
    assert "VM web-1 would have been denied" in entry.message and "no CIS attestation" in entry.message


def test_off_neither_hashes_nor_records(alice, prod, image, tmp_path):
    missing = tmp_path / "not-there.qcow2"  # hashing it would fail
    attestation.check_launch(actor=alice, image=image, project=prod, vm_name="web-1", image_file=missing)
    attestation.set_policy(actor=alice, project=prod, mode="off")
    attestation.check_launch(actor=alice, image=image, project=prod, vm_name="web-1", image_file=missing)
    assert not AuditEntry.objects.filter(action="image.attestation.would-deny").exists()


def test_would_deny_lists_unsigned_images_offered_to_the_project(
    dana, prod, sandbox, dha, image, dana_key, key_pair, django_assert_max_num_queries
):
    signed(dana, image, dana_key, key_pair)
    unsigned = Image.objects.create(
        project=prod, region=dha, name="db-cis", state=Image.State.AVAILABLE, sha256="1" * 64, created_by="t"
    )
    stock = Image.objects.create(
        project=None,
        region=dha,
        name="ubuntu-24.04",
        slot=Image.Slot.STOCK,
        state=Image.State.AVAILABLE,
        sha256="2" * 64,
        created_by="t",
    )
    Image.objects.create(
        project=sandbox, region=dha, name="elsewhere", state=Image.State.AVAILABLE, created_by="t"
    )
    Image.objects.create(project=prod, region=dha, name="uploading", created_by="t")
    for n in range(5):
        Image.objects.create(
            project=prod,
            region=dha,
            name=f"more-{n}",
            state=Image.State.AVAILABLE,
            sha256="3" * 64,
            created_by="t",
        )
    with django_assert_max_num_queries(3):
        denied = attestation.would_deny(prod)
    names = {image.name: reason for image, reason in denied}
    assert set(names) == {"db-cis", "ubuntu-24.04", *(f"more-{n}" for n in range(5))}
    assert names["db-cis"] == "it has no CIS attestation"
    assert "Cloud Digit stock image" in names[stock.name]
    assert unsigned.name in names


# --- Through VM-create from an image ----------------------------------------------------------------


@pytest.fixture
def bootable(prod, dha):
    """An image whose local copy is a real (empty) qcow2 file, as the worker leaves it."""
    from clouddigit.backends import volumes
    from images.files import cache_path

    made = Image.objects.create(
        project=prod,
        region=dha,
        name="boot-cis",
        state=Image.State.AVAILABLE,
        tags={"cis-level": "1"},
        virtual_size=2**20,
        created_by="t",
    )
    path = cache_path(made)
    path.parent.mkdir(parents=True, exist_ok=True)
    volumes.create(path, 2**20)
    made.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    made.save()
    return made


def launch(actor, project, region, image):
    from images.launch import launch_vm

    return launch_vm(
        actor=actor, project=project, region=region, image=image, name="web-1", flavor="std-2x4", vpc="v"
    )


def test_vm_create_is_refused_under_enforce_and_logged(alice, prod, dha, bootable):
    from clouddigit.compute.models import VM

    attestation.set_policy(actor=alice, project=prod, mode="enforce")
    with pytest.raises(AttestationRequired, match="image boot-cis has none: it has no CIS attestation"):
        launch(alice, prod, dha, bootable)
    assert not VM.objects.exists()
    entry = AuditEntry.objects.get(action="compute.vm.create-from-image")
    assert entry.outcome == AuditEntry.Outcome.REFUSED and "AttestationRequired" in entry.message


def test_vm_create_goes_on_under_audit(alice, prod, dha, bootable):
    attestation.set_policy(actor=alice, project=prod, mode="audit")
    vm = launch(alice, prod, dha, bootable)
    assert vm.name == "web-1"
    assert AuditEntry.objects.filter(
        action="image.attestation.would-deny", target_id=str(bootable.pk)
    ).exists()


# --- REST API ---------------------------------------------------------------------------------------


def api(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


KEYS = "/api/v1/iam/signing-keys/"
POLICIES = "/api/v1/compute/image-policies/"


def test_api_register_list_and_revoke_a_key(dana, alice, charlie, key_pair):
    _, public = key_pair
    created = api(dana).post(
        KEYS, {"account": "acme", "name": "dana-laptop", "public_key": public}, format="json"
    )
    assert created.status_code == 201, created.json()
    key = created.json()
    assert (key["owner"], key["account"], key["public_key"], key["revoked"]) == (
        "dana",
        "acme",
        public,
        False,
    )
    assert [k["name"] for k in api(alice).get(KEYS).json()["results"]] == ["dana-laptop"]
    assert api(charlie).get(KEYS).json()["results"] == []
    assert api(charlie).post(f"{KEYS}{key['id']}/revoke/").status_code == 404
    revoked = api(dana).post(f"{KEYS}{key['id']}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["revoked_by"] == "dana"
    assert api(dana).get(KEYS, {"revoked": "false"}).json()["results"] == []


def test_api_bad_key_and_unknown_account_are_400_with_the_reason(dana, charlie):
    bad = api(dana).post(KEYS, {"account": "acme", "name": "k", "public_key": "hello"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["field"] == "public_key" and "raw 32-byte key in base64" in bad.json()["message"]
    hidden = api(charlie).post(KEYS, {"account": "acme", "name": "k", "public_key": "x"}, format="json")
    assert (
        hidden.status_code == 400
        and hidden.json()["message"] == "There is no account 'acme' that you can see."
    )


def test_api_attest_and_status(dana, image, dana_key, key_pair):
    private, _ = key_pair
    url = f"/api/v1/compute/images/{image.id}/"
    assert api(dana).get(f"{url}attestation/").json() == {
        "valid": False,
        "reason": "it has no CIS attestation",
        "attestation": None,
        "attestations": [],
    }
    wrong = api(dana).post(
        f"{url}attest/", {"key": "dana-laptop", "signature": attestation.sign(private, "0" * 64, "1", "dana")}
    )
    assert wrong.status_code == 400 and wrong.json()["code"] == "AttestationInvalid"
    signature = attestation.sign(private, image.sha256, "1", "dana")
    made = api(dana).post(f"{url}attest/", {"key": "dana-laptop", "signature": signature})
    assert made.status_code == 201, made.json()
    assert (made.json()["signer"], made.json()["key_name"]) == ("dana", "dana-laptop")
    status = api(dana).get(f"{url}attestation/").json()
    assert status["valid"] and status["attestation"]["id"] == made.json()["id"]
    unknown = api(dana).post(f"{url}attest/", {"key": "nope", "signature": signature})
    assert unknown.status_code == 400 and unknown.json()["field"] == "key"


def test_api_policy_get_set_and_would_deny(alice, bob, prod, image):
    listed = api(alice).get(POLICIES, {"project": "acme/prod"}).json()["results"]
    assert [(p["project"], p["attestation"]) for p in listed] == [("acme/prod", "off")]
    url = f"{POLICIES}{prod.id}/"
    refused = api(bob).put(url, {"attestation": "enforce"}, format="json")
    assert refused.status_code == 403
    changed = api(alice).put(url, {"attestation": "audit"}, format="json")
    assert changed.status_code == 200 and changed.json()["attestation"] == "audit"
    assert changed.json()["updated_by"] == "alice"
    assert api(alice).put(url, {"attestation": "strict"}, format="json").status_code == 400
    denied = api(bob).get(f"{url}would-deny/").json()
    assert [(d["name"], d["reason"]) for d in denied] == [("web-cis", "it has no CIS attestation")]


def test_api_vm_create_under_enforce_answers_403_with_the_reason(alice, prod, dha, bootable):
    attestation.set_policy(actor=alice, project=prod, mode="enforce")
    body = {"project": "acme/prod", "region": dha.slug, "name": "web-1", "image": str(bootable.id)}
    response = api(alice).post(
        "/api/v1/compute/vms/", {**body, "flavor": "std-2x4", "vpc": "v"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "AttestationRequired"
    assert "it has no CIS attestation" in response.json()["message"]
