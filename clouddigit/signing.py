"""The bytes a CIS attestation signs, and the Ed25519 key handling done on the attestor's machine.

No Django here: the CLI (`clouddigit iam signing-key create`, `clouddigit compute image sign`) signs
with these functions and the server (images.attestation) verifies over the same `message`, so the two
cannot disagree on the format.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MESSAGE_PREFIX = b"clouddigit-image-attestation/v1\n"


def message(image_sha256: str, cis_level: str, signer: str) -> bytes:
    """The bytes an attestor signs (UTF-8), version 1:

        b"clouddigit-image-attestation/v1\\n" + image_sha256 + b"\\n" + cis_level + b"\\n"
        + signer_username + b"\\n"

    `image_sha256` is the lower-case hex SHA-256 of the stored qcow2 file (Image.sha256), `cis_level`
    the image's `cis-level` tag and `signer_username` the attestor's login name. The prefix names the
    purpose and version, so a signature made for anything else never verifies here. A line break
    inside a field would let two different triples give the same bytes, so it is refused.
    """
    fields = (image_sha256, cis_level, signer)
    if any("\n" in field or "\r" in field for field in fields):
        raise ValueError("attestation fields must not contain line breaks")
    return MESSAGE_PREFIX + "".join(f"{field}\n" for field in fields).encode("utf-8")


def generate_key_pair() -> tuple[bytes, str]:
    """A new Ed25519 key pair: the private key as unencrypted PKCS#8 PEM (the caller keeps it, mode
    0600) and the public key as raw base64, ready to register."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, _raw_public_b64(private)


def _private_key(private_key_pem: bytes) -> Ed25519PrivateKey:
    private = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError("the private key is not an Ed25519 key")
    return private


def _raw_public_b64(private: Ed25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_of(private_key_pem: bytes) -> str:
    """The raw base64 public key of a PEM private key: tells whether a key file is the private half of
    a registered key before anything is signed."""
    return _raw_public_b64(_private_key(private_key_pem))


def sign(private_key_pem: bytes, image_sha256: str, cis_level: str, signer: str) -> str:
    """The base64 Ed25519 signature of `message(...)` with a PEM private key (PKCS#8, as openssl and
    `generate_key_pair` write it). ValueError when the PEM is not an unencrypted Ed25519 key."""
    signature = _private_key(private_key_pem).sign(message(image_sha256, cis_level, signer))
    return base64.b64encode(signature).decode("ascii")
