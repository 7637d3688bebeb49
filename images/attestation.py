"""CIS attestations: an image.cis-attestor's Ed25519 signature over an image's SHA-256, its cis-level and
the signer, and the project policy that makes VM-create require one.

The private key never reaches the server. An attestor generates a key pair locally (`clouddigit iam
signing-key create`, or openssl), registers the public key, signs locally (`clouddigit compute image
sign`) and sends the signature, which is verified before it is stored. Whether an image is attested is
decided again at every use (`attestation_status`): a revoked key, changed bytes or a changed cis-level
tag make an old signature stop counting, without anyone having to delete it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import IntegrityError, transaction
from django.db.models import Prefetch, Q
from django.utils import timezone

from clouddigit.access import actor_name, can, require
from clouddigit.audit.log import Target, audited, record
from clouddigit.compute.models import Account, Project
from clouddigit.compute.permissions import Perm
from clouddigit.errors import Conflict, InvalidRequest, PermissionRefused, ServiceError
from clouddigit.names import check_name

# The message and the signing side live beside the CLI, which signs on the attestor's machine; they are
# re-exported here so that the server's code and tests name one module.
from clouddigit.signing import generate_key_pair as generate_key_pair
from clouddigit.signing import message as message
from clouddigit.signing import sign as sign
from images import inspection
from images.models import Attestation, Image, ImagePolicy, SigningKey

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_CIS_LEVEL = 16  # Attestation.cis_level's length
SIGN_COMMAND = "clouddigit compute image sign {image} --key-name <key> --key-file <private key>"


class AttestationInvalid(ServiceError):
    code = "AttestationInvalid"
    status = 400


class AttestationRequired(ServiceError):
    code = "AttestationRequired"
    status = 403


# --- Keys and signatures ---------------------------------------------------------------------------


def public_key_raw(text: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key given as raw base64 or as a PEM SubjectPublicKeyInfo
    block; InvalidRequest saying which formats are accepted otherwise."""
    text = (text or "").strip()
    expected = (
        "Paste an Ed25519 public key: either the raw 32-byte key in base64 (44 characters) or a PEM "
        "block starting with -----BEGIN PUBLIC KEY----- (openssl pkey -in key.pem -pubout)."
    )
    if "PRIVATE KEY" in text:
        # Refused before anything is parsed or logged as a key: a private key must stay with its owner.
        raise InvalidRequest(
            "That is a private key. Keep it to yourself and register only its public half. " + expected,
            field="public_key",
        )
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError, TypeError):
            raise InvalidRequest(f"The PEM block could not be read. {expected}", field="public_key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidRequest(
                f"The PEM block holds a {type(key).__name__.removesuffix('PublicKey').lstrip('_')} key, "
                f"not an Ed25519 key. {expected}",
                field="public_key",
            )
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"The key is neither base64 nor PEM. {expected}", field="public_key") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise InvalidRequest(
            f"The key is {len(raw)} bytes long; an Ed25519 public key is {PUBLIC_KEY_BYTES}. {expected}",
            field="public_key",
        )
    return raw


def fingerprint_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _verifies(public_key_b64: str, signature_b64: str, signed: bytes) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
        key.verify(base64.b64decode(signature_b64), signed)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


# --- Signing keys ----------------------------------------------------------------------------------


def _may_attest_in(actor, account: Account) -> bool:
    """`attest_images` on the account or on any of its projects: a project-scoped attestor registers
    keys in the account, since keys belong to the account, not to one project."""
    if can(actor, Perm.ATTEST_IMAGES, account):
        return True
    return Project.objects.visible_to(actor, Perm.ATTEST_IMAGES).filter(account=account).exists()


# The key text is not logged: someone may paste a private key by mistake. The entry's target names the
# registered key and its fingerprint.
@audited("image.signing-key.register", secret=("public_key",))
def register_key(*, actor, account: Account, name: str, public_key: str) -> SigningKey:
    """Register `actor`'s Ed25519 public key in `account` (raw base64 or PEM); stored as raw base64
    with its SHA-256 fingerprint."""
    if actor is None:
        raise InvalidRequest("A signing key belongs to a person; register it as the attestor who holds it.")
    if not _may_attest_in(actor, account):
        raise PermissionRefused(
            f"You may not register signing keys in {account}: it needs the image.cis-attestor role "
            f"('{Perm.ATTEST_IMAGES.value}') on the account or one of its projects. "
            "Ask an admin of the account for one."
        )
    name = check_name(name)
    raw = public_key_raw(public_key)
    fingerprint = fingerprint_of(raw)
    existing = SigningKey.objects.filter(fingerprint=fingerprint).select_related("account").first()
    if existing is not None:
        # Only name the other key when it is in the same account: fingerprints are global.
        where = f" as {existing.name!r}" if existing.account_id == account.pk else ""
        raise Conflict(
            f"This public key is already registered{where}. Each key pair is registered once; "
            "generate a new pair for a new key.",
            field="public_key",
        )
    if SigningKey.objects.filter(account=account, name=name).exists():
        raise Conflict(
            f"A signing key named {name!r} already exists in {account}; pick another name.", field="name"
        )
    try:
        with transaction.atomic():
            return SigningKey.objects.create(
                account=account,
                owner=actor,
                name=name,
                public_key=base64.b64encode(raw).decode("ascii"),
                fingerprint=fingerprint,
            )
    except IntegrityError:
        raise Conflict(
            f"A signing key named {name!r} or with this public key was registered at the same time; "
            "list the keys again."
        ) from None


@audited("image.signing-key.revoke", target="key")
def revoke_key(*, actor, key: SigningKey) -> SigningKey:
    """Revoke a key: every attestation made with it stops counting from now on."""
    owner = actor is not None and actor.pk == key.owner_id
    if not owner and not can(actor, Perm.MANAGE_ROLES, key.account):
        raise PermissionRefused(
            f"You may not revoke signing key {key.name} in {key.account}: only its owner or someone who "
            f"may grant roles in the account ('{Perm.MANAGE_ROLES.value}') can."
        )
    if key.revoked:
        raise Conflict(f"Signing key {key.name} was already revoked on {key.revoked_at:%Y-%m-%d %H:%M} UTC.")
    key.revoked_at = timezone.now()
    key.revoked_by = actor_name(actor)
    key.save(update_fields=["revoked_at", "revoked_by"])
    return key


def keys_visible_to(user):
    """The signing keys a user sees: their own, and every key of an account where they may attest
    images (to know whose signatures count) or grant roles (to revoke them)."""
    if not user.is_authenticated:
        return SigningKey.objects.none()
    attest_accounts = Account.objects.visible_to(user, Perm.ATTEST_IMAGES).values("pk")
    admin_accounts = Account.objects.holding(user, Perm.MANAGE_ROLES).values("pk")
    return SigningKey.objects.filter(
        Q(owner=user) | Q(account__in=attest_accounts) | Q(account__in=admin_accounts)
    ).select_related("account", "owner")


# --- Attesting --------------------------------------------------------------------------------------


def _decode_signature(signature: str) -> str:
    """The signature as canonical base64, or AttestationInvalid when it is not 64 bytes of base64."""
    try:
        raw = base64.b64decode((signature or "").strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != SIGNATURE_BYTES:
        raise AttestationInvalid(
            "The signature is not an Ed25519 signature (64 bytes, base64). Sign with "
            "`clouddigit compute image sign`, which prints and sends it.",
            field="signature",
        )
    return base64.b64encode(raw).decode("ascii")


@audited("image.attest", target="image")
def attest_image(*, actor, image: Image, key: SigningKey, signature: str) -> Attestation:
    """Store `actor`'s signature of `image` once it verifies with `key` over
    message(image.sha256, image.cis_level, actor's username)."""
    if image.project is None:
        raise InvalidRequest(
            f"Image {image.name} is a Cloud Digit {image.get_slot_display().lower()} image; only custom "
            "images of a project are attested."
        )
    require(actor, Perm.ATTEST_IMAGES, image.project, f"attest image {image.name}")
    if actor is None:
        raise InvalidRequest("An attestation is signed by a person; sign it as the attestor.")
    if image.state != Image.State.AVAILABLE:
        raise Conflict(
            f"Image {image.name} is {image.get_state_display().lower()}; attest it once it is Available."
        )
    cis_level = image.cis_level
    if not cis_level:
        raise InvalidRequest(
            f"Image {image.name} has no cis-level tag. Tag it first (e.g. cis-level=1) with the CIS level "
            "it was hardened to, then sign it: the level is part of what is signed.",
            field="image",
        )
    if len(cis_level) > MAX_CIS_LEVEL or any(not ch.isprintable() for ch in cis_level):
        raise InvalidRequest(
            f"Image {image.name}'s cis-level tag must be a short value such as 1 or 2 "
            f"(at most {MAX_CIS_LEVEL} printable characters).",
            field="image",
        )
    if key.owner_id != actor.pk:
        raise PermissionRefused(f"Signing key {key.name} is not yours; sign with one of your own keys.")
    if key.account_id != image.project.account_id:
        raise InvalidRequest(
            f"Signing key {key.name} is registered in {key.account}, not in {image.project.account}; "
            f"register a key in {image.project.account}.",
            field="key",
        )
    if key.revoked:
        raise AttestationInvalid(
            f"Signing key {key.name} was revoked on {key.revoked_at:%Y-%m-%d %H:%M} UTC; register a new key.",
            field="key",
        )
    signature = _decode_signature(signature)
    signer = actor.get_username()
    if not _verifies(key.public_key, signature, message(image.sha256, cis_level, signer)):
        raise AttestationInvalid(
            f"The signature does not verify with key {key.name} ({key.fingerprint[:16]}) over image "
            f"{image.name} (SHA-256 {image.sha256}), cis-level {cis_level}, signer {signer}. Sign with the "
            "private key of that key pair, while logged in as yourself: "
            + SIGN_COMMAND.format(image=image.id),
            field="signature",
        )
    if image.attestations.filter(
        key=key, image_sha256=image.sha256, cis_level=cis_level, signer=signer
    ).exists():
        raise Conflict(
            f"Image {image.name} is already attested with key {key.name} for these bytes and cis-level "
            f"{cis_level}."
        )
    return Attestation.objects.create(
        image=image,
        key=key,
        signer=signer,
        image_sha256=image.sha256,
        cis_level=cis_level,
        signature=signature,
    )


def _invalid_because(image: Image, attestation: Attestation, file_sha256: str | None) -> str:
    """Why `attestation` does not count for `image` now; "" when it does."""
    key = attestation.key
    if key.revoked:
        return (
            f"signing key {key.name} ({key.fingerprint[:16]}) was revoked on "
            f"{key.revoked_at:%Y-%m-%d %H:%M} UTC"
        )
    if image.sha256 != attestation.image_sha256:
        return (
            f"the image's bytes changed since it was signed (SHA-256 {image.sha256 or 'none'} ≠ signed "
            f"{attestation.image_sha256})"
        )
    if file_sha256 is not None and file_sha256 != attestation.image_sha256:
        return (
            f"the image file's bytes differ from the signed ones (SHA-256 {file_sha256} ≠ signed "
            f"{attestation.image_sha256})"
        )
    if image.cis_level != attestation.cis_level:
        if not image.cis_level:
            return f"the cis-level tag (signed as {attestation.cis_level}) was removed since it was signed"
        return f"cis-level changed from {attestation.cis_level} to {image.cis_level} since it was signed"
    # The row could have been altered behind the service's back; only a verifying signature counts.
    signed = message(attestation.image_sha256, attestation.cis_level, attestation.signer)
    if not _verifies(key.public_key, attestation.signature, signed):
        return f"the stored signature does not verify with key {key.name} ({key.fingerprint[:16]})"
    return ""


def attestation_status(image: Image, file_sha256: str | None = None) -> tuple[Attestation | None, str]:
    """The newest attestation of `image` that is valid now, and ""; or None and why none is.

    Valid now: its key is not revoked and its signature verifies over the image's current SHA-256 and
    current cis-level tag, and over `file_sha256` (the hash of the file about to be used) when given.
    The reason given is the newest attestation's, as that is the one the attestor meant to count.
    Uses `image.attestations.all()`, so a caller listing many images can prefetch them with their keys.
    """
    if image.project_id is None:
        return None, (f"it is a Cloud Digit {image.slot} image, which a project's attestors cannot sign")
    first_reason = ""
    for attestation in image.attestations.all():
        reason = _invalid_because(image, attestation, file_sha256)
        if not reason:
            return attestation, ""
        first_reason = first_reason or reason
    return None, first_reason or "it has no CIS attestation"


# --- Project policy ---------------------------------------------------------------------------------


def policy_mode(project: Project) -> str:
    policy = ImagePolicy.objects.filter(project=project).first()
    return policy.require_attestation if policy else ImagePolicy.Attestation.OFF


@audited("image.policy.set", target="project")
def set_policy(*, actor, project: Project, mode: str) -> ImagePolicy:
    """Set whether VM-create in `project` requires a valid attestation (enforce), records what it would
    deny (audit) or ignores attestations (off)."""
    require(actor, Perm.MANAGE_IMAGE_QUOTAS, project, "set the project's image policy")
    if mode not in ImagePolicy.Attestation.values:
        raise InvalidRequest(
            f"The attestation policy must be one of {', '.join(ImagePolicy.Attestation.values)}.",
            field="mode",
        )
    policy, _ = ImagePolicy.objects.update_or_create(
        project=project, defaults={"require_attestation": mode, "updated_by": actor_name(actor)}
    )
    return policy


def check_launch(*, actor, image: Image, project: Project, vm_name: str, image_file: Path) -> None:
    """Apply `project`'s attestation policy to a VM about to boot from `image_file` (the image's local
    copy). Off: nothing, not even hashing. Enforce: AttestationRequired unless a valid attestation
    covers the file's bytes. Audit: record the denial that enforce would make, and let the launch go on.

    Runs inside the launch's transaction, so a would-deny entry is kept with the launch it describes.
    """
    mode = policy_mode(project)
    if mode == ImagePolicy.Attestation.OFF:
        return
    attestation, reason = attestation_status(image, inspection.sha256_of(image_file))
    if attestation is not None:
        return
    if mode == ImagePolicy.Attestation.ENFORCE:
        raise AttestationRequired(
            f"Project {project} requires a valid CIS attestation to create VMs, and image {image.name} has "
            f"none: {reason}. Ask an image.cis-attestor to sign it ({SIGN_COMMAND.format(image=image.id)}), "
            "or ask an admin of the project to switch its image policy to audit or off.",
            field="image",
        )
    record(
        actor=actor,
        action="image.attestation.would-deny",
        # The launching project is the entry's scope: the image may be org-shared or a platform image.
        target=Target("image", str(image.pk), image.name, project.account, project),
        message=f"VM {vm_name} would have been denied (policy audit): image {image.name}: {reason}.",
        detail={"vm": vm_name, "reason": reason, "mode": mode},
    )


def would_deny(project: Project) -> list[tuple[Image, str]]:
    """Images offered to `project` whose attestation is not valid now, and why: what enforce would
    deny. Files are not hashed again; the recorded SHA-256 is compared."""
    images = (
        Image.objects.offered_to(project)
        .filter(state=Image.State.AVAILABLE)
        .select_related("project__account")
        .prefetch_related(
            Prefetch(
                "attestations", queryset=Attestation.objects.select_related("key").order_by("-created_at")
            )
        )
        .order_by("name", "region_id")
    )
    denied = []
    for image in images:
        attestation, reason = attestation_status(image)
        if attestation is None:
            denied.append((image, reason))
    return denied
