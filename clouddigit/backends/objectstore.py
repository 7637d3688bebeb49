"""One region's object store: a bucket on an S3 endpoint, through boto3.

Integrity is end to end. Every upload carries a SHA-256 checksum the server verifies before it stores
anything (a mismatch is refused with BadDigest): a single-part upload sends the digest computed from
the file, a multipart upload sends one per part and is then compared with the composite checksum the
server recorded, so a file that changed while it was read is caught. The whole object's SHA-256 is
also stored as metadata (`sha256`), because S3 keeps no whole-object SHA-256 for multipart objects;
reads compare against it.

Every failure is an ObjectStoreError naming the endpoint, bucket and key, with a hint. The client
fails fast on a dead endpoint (short connect timeout, three attempts) instead of retrying for minutes.

No Django here: `ObjectStore.for_region` takes one entry of `settings.REGIONS` (only a region slug
makes it read the settings).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from s3transfer.utils import ChunksizeAdjuster

MiB = 1024 * 1024
DEFAULT_REGION_NAME = "us-east-1"
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_MULTIPART_CHUNKSIZE = 64 * MiB
CONNECT_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 60
MAX_ATTEMPTS = 3
TRANSFER_CONCURRENCY = 4
READ_CHUNK_BYTES = 1 * MiB
SHA256_METADATA_KEY = "sha256"
CONTENT_TYPE = "application/octet-stream"

_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}
_CHECKSUM_CODES = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidRequest"}

# boto3's default session is shared; creating clients from it is not thread-safe.
_client_lock = threading.Lock()


class ObjectStoreError(Exception):
    """An object-store operation failed. `code` is S3's error code when the server answered."""

    def __init__(
        self, message: str, *, endpoint: str, bucket: str, key: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.bucket = bucket
        self.key = key
        self.code = code


class ObjectStore:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        region_name: str = DEFAULT_REGION_NAME,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
        timeout_seconds: float | None = None,
    ):
        """`timeout_seconds`: one attempt, waiting at most that long to connect and to read (a check)."""
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.region_name = region_name
        self.transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=TRANSFER_CONCURRENCY,
            use_threads=True,
            preferred_transfer_client="classic",
        )
        config = Config(
            region_name=region_name,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=timeout_seconds or CONNECT_TIMEOUT_SECONDS,
            read_timeout=timeout_seconds or READ_TIMEOUT_SECONDS,
            retries={"max_attempts": 1 if timeout_seconds else MAX_ATTEMPTS, "mode": "standard"},
        )
        with _client_lock:
            self.client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=config,
            )

    @classmethod
    def for_region(cls, region: Mapping[str, Any] | str, **options: Any) -> ObjectStore:
        """The store of one region: an entry of `settings.REGIONS`, or its slug."""
        if isinstance(region, str):
            from django.conf import settings

            region = settings.REGIONS[region]
        return cls(
            endpoint=region["s3_endpoint"],
            access_key=region["s3_access_key"],
            secret_key=region["s3_secret_key"],
            bucket=region["s3_bucket"],
            **options,
        )

    def __repr__(self) -> str:
        return f"<ObjectStore {self.endpoint}/{self.bucket}>"

    # --- buckets ---------------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (and is ours)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            if _error_code(error) not in {"404", "NoSuchBucket", "NotFound"}:
                raise self._error("check bucket", None, error) from error
        except (BotoCoreError, Boto3Error) as error:
            raise self._error("check bucket", None, error) from error
        create_args: dict[str, Any] = {"Bucket": self.bucket}
        if self.region_name != DEFAULT_REGION_NAME:
            create_args["CreateBucketConfiguration"] = {"LocationConstraint": self.region_name}
        try:
            self.client.create_bucket(**create_args)
        except ClientError as error:
            if _error_code(error) != "BucketAlreadyOwnedByYou":  # created meanwhile by another process
                raise self._error("create bucket", None, error) from error
        except (BotoCoreError, Boto3Error) as error:
            raise self._error("create bucket", None, error) from error

    def check_bucket(self) -> str:
        """Raise unless the bucket answers with these credentials; for the Backend health view."""
        with self._errors("check bucket", None):
            self.client.head_bucket(Bucket=self.bucket)
        return f"bucket {self.bucket} answers"

    # --- writes ----------------------------------------------------------------------------------

    def put_file(self, key: str, path: str | os.PathLike[str], *, sha256: str | None = None) -> str:
        """Upload a file (multipart above the threshold, streamed from disk); return its SHA-256 hex.

        With `sha256`, the file must have that digest or nothing is uploaded.
        """
        path = Path(path)
        size = path.stat().st_size
        multipart = size >= self.transfer_config.multipart_threshold
        part_size = ChunksizeAdjuster().adjust_chunksize(self.transfer_config.multipart_chunksize, size)
        digest, part_digests = _hash_file(path, part_size if multipart else None)
        if sha256 is not None and sha256.lower() != digest.hex():
            raise ObjectStoreError(
                f"put {self._where(key)} refused: {path} has SHA-256 {digest.hex()}, expected {sha256}",
                endpoint=self.endpoint,
                bucket=self.bucket,
                key=key,
                code="BadDigest",
            )
        metadata = {SHA256_METADATA_KEY: digest.hex()}
        if not multipart:
            with open(path, "rb") as body, self._errors("put", key):
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ContentType=CONTENT_TYPE,
                    Metadata=metadata,
                    ChecksumSHA256=_b64(digest),
                )
            return digest.hex()
        with self._errors("put", key):
            self.client.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs={"ChecksumAlgorithm": "SHA256", "ContentType": CONTENT_TYPE, "Metadata": metadata},
                Config=self.transfer_config,
            )
        self._verify_composite_checksum(key, path, part_digests)
        return digest.hex()

    def put_bytes(self, key: str, data: bytes, *, sha256: str | None = None) -> str:
        """Upload bytes; return their SHA-256 hex. With `sha256`, the server itself refuses the
        upload (BadDigest) unless the bytes have that digest."""
        digest = hashlib.sha256(data).digest()
        sent = _from_hex(sha256) if sha256 is not None else digest
        with self._errors("put", key):
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=CONTENT_TYPE,
                Metadata={SHA256_METADATA_KEY: sent.hex()},
                ChecksumSHA256=_b64(sent),
            )
        return digest.hex()

    def copy(self, src_key: str, dst_key: str, src_store: ObjectStore | None = None) -> None:
        """Server-side copy into this bucket from `src_store`'s bucket (default: this one), which must
        be on the same endpoint. Large objects are copied part by part; metadata is kept."""
        source = src_store or self
        if source.endpoint != self.endpoint:
            raise ValueError(
                f"server-side copy needs both buckets on one endpoint, not {source.endpoint} and "
                f"{self.endpoint}: copy across endpoints with get_file and put_file"
            )
        info = source.head(src_key)
        if info is None:
            raise ObjectStoreError(
                f"copy {source._where(src_key)} to {self._where(dst_key)} failed: "
                "the source object does not exist",
                endpoint=self.endpoint,
                bucket=source.bucket,
                key=src_key,
                code="NoSuchKey",
            )
        with self._errors("copy", dst_key, detail=f"from {source._where(src_key)}"):
            self.client.copy(
                {"Bucket": source.bucket, "Key": src_key},
                self.bucket,
                dst_key,
                ExtraArgs={
                    "MetadataDirective": "REPLACE",  # dropped by boto3 for multipart copies
                    "Metadata": info["metadata"],
                    "ContentType": info["content_type"] or CONTENT_TYPE,
                    "ChecksumAlgorithm": "SHA256",
                },
                SourceClient=source.client,
                Config=self.transfer_config,
            )

    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing object is not an error."""
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def abort_incomplete_uploads(self, *, started_before: datetime, prefix: str = "") -> builtins.list[str]:
        """Abort the multipart uploads under `prefix` started before `started_before`; return their keys.

        boto3 aborts an upload that fails in this process; one whose process was killed stays in the
        bucket, its parts stored (and billed) but invisible to listings, until it is aborted.
        """
        aborted: builtins.list[str] = []
        with self._errors("list multipart uploads", prefix or None):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            stale = [upload for page in pages for upload in page.get("Uploads", [])]
        for upload in stale:
            if upload["Initiated"] >= started_before:
                continue
            with self._errors("abort multipart upload", upload["Key"]):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            aborted.append(upload["Key"])
        return aborted

    # --- reads -----------------------------------------------------------------------------------

    def head(self, key: str) -> dict[str, Any] | None:
        """Size, SHA-256 hex (None when unknown), ETag, last modified, content type and metadata of an
        object; None if it does not exist."""
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as error:
            if _error_code(error) in _NOT_FOUND_CODES:
                return None
            raise self._error("head", key, error) from error
        except (BotoCoreError, Boto3Error) as error:
            raise self._error("head", key, error) from error
        metadata = response.get("Metadata") or {}
        return {
            "key": key,
            "size": response["ContentLength"],
            "sha256": _object_sha256(metadata, response),
            "etag": response.get("ETag", "").strip('"'),
            "last_modified": response.get("LastModified"),
            "content_type": response.get("ContentType"),
            "metadata": metadata,
        }

    def get_bytes(self, key: str) -> bytes:
        with self._errors("get", key):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            data = response["Body"].read()
        expected = _object_sha256(response.get("Metadata") or {}, {})
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise self._mismatch(key, expected, hashlib.sha256(data).hexdigest())
        return data

    def get_file(self, key: str, path: str | os.PathLike[str]) -> str:
        """Download an object to `path` (in parallel ranges for large objects); return its SHA-256 hex.

        The data lands in `<path>.part` and is renamed to `path` only after its SHA-256 matched the
        stored one, so `path` never holds a partial or corrupt object.
        """
        path = Path(path)
        info = self.head(key)
        if info is None:
            raise ObjectStoreError(
                f"get {self._where(key)} failed: the object does not exist",
                endpoint=self.endpoint,
                bucket=self.bucket,
                key=key,
                code="NoSuchKey",
            )
        partial = path.with_name(path.name + ".part")
        try:
            with self._errors("get", key):
                self.client.download_file(self.bucket, key, str(partial), Config=self.transfer_config)
            digest = _hash_file(partial, None)[0].hex()
            if info["sha256"] is not None and digest != info["sha256"]:
                raise self._mismatch(key, info["sha256"], digest)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return digest

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Keys under `prefix`, in S3's (lexicographic) order."""
        keys: builtins.list[str] = []
        with self._errors("list", prefix or None):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    # --- helpers ---------------------------------------------------------------------------------

    def _verify_composite_checksum(self, key: str, path: Path, part_digests: builtins.list[bytes]) -> None:
        """S3's checksum of a multipart object is SHA-256(part digests) + "-<parts>": compare it with
        the parts as we hashed them. A difference means the file changed while it was uploaded."""
        with self._errors("head", key):
            response = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        stored = response.get("ChecksumSHA256")
        if not stored:  # an S3 that keeps no checksums: each part was still verified on arrival
            return
        expected = f"{_b64(hashlib.sha256(b''.join(part_digests)).digest())}-{len(part_digests)}"
        if stored != expected:
            self.delete(key)
            raise ObjectStoreError(
                f"put {self._where(key)} failed: the server stored checksum {stored} but {path} hashed "
                f"to {expected}; the file changed while it was uploaded, so the object was deleted",
                endpoint=self.endpoint,
                bucket=self.bucket,
                key=key,
                code="BadDigest",
            )

    def _where(self, key: str | None) -> str:
        target = f"s3://{self.bucket}/{key}" if key is not None else f"bucket {self.bucket}"
        return f"{target} at {self.endpoint}"

    def _mismatch(self, key: str, expected: str, actual: str) -> ObjectStoreError:
        return ObjectStoreError(
            f"get {self._where(key)} failed: the data read has SHA-256 {actual}, but {expected} was "
            "stored; the object is corrupt or was changed in transit",
            endpoint=self.endpoint,
            bucket=self.bucket,
            key=key,
            code="BadDigest",
        )

    @contextlib.contextmanager
    def _errors(self, action: str, key: str | None, detail: str = "") -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, Boto3Error, ClientError) as error:
            raise self._error(action, key, error, detail) from error

    def _error(self, action: str, key: str | None, error: Exception, detail: str = "") -> ObjectStoreError:
        cause = _botocore_cause(error)
        code = _error_code(cause) if isinstance(cause, ClientError) else None
        what = f"{action} {self._where(key)}" + (f" {detail}" if detail else "")
        message = f"{what} failed: {cause}"
        hint = _hint(cause, code)
        if hint:
            message += f" ({hint})"
        return ObjectStoreError(message, endpoint=self.endpoint, bucket=self.bucket, key=key, code=code)


def _botocore_cause(error: BaseException) -> BaseException:
    """boto3's upload errors wrap the client's error: find the one that says what happened."""
    seen = error
    while isinstance(seen, S3UploadFailedError) and (seen.__cause__ or seen.__context__):
        seen = seen.__cause__ or seen.__context__
    return seen


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _hint(error: BaseException, code: str | None) -> str:
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)):
        return "is the region's S3 server running? The run command starts the embedded one"
    if isinstance(error, ReadTimeoutError):
        return "the S3 server accepted the connection but did not answer in time"
    if code == "NoSuchBucket":
        return "the bucket does not exist: check the region's s3_bucket, or create it with ensure_bucket()"
    if code in _CREDENTIAL_CODES:
        return "check the region's s3_access_key and s3_secret_key"
    if code in _CHECKSUM_CODES:
        return "the server refused data whose SHA-256 did not match the checksum sent"
    if code in _NOT_FOUND_CODES:
        return "the object does not exist"
    return ""


def _hash_file(path: Path, part_size: int | None) -> tuple[bytes, list[bytes]]:
    """The file's SHA-256 and, with `part_size`, the SHA-256 of each part, in one read."""
    whole = hashlib.sha256()
    part_digests: list[bytes] = []
    part = hashlib.sha256()
    part_filled = 0
    with open(path, "rb") as file:
        while chunk := file.read(READ_CHUNK_BYTES):
            whole.update(chunk)
            if part_size is None:
                continue
            view = memoryview(chunk)
            while view:
                take = min(len(view), part_size - part_filled)
                part.update(view[:take])
                part_filled += take
                view = view[take:]
                if part_filled == part_size:
                    part_digests.append(part.digest())
                    part, part_filled = hashlib.sha256(), 0
    if part_size is not None and part_filled:
        part_digests.append(part.digest())
    return whole.digest(), part_digests


def _object_sha256(metadata: Mapping[str, str], response: Mapping[str, Any]) -> str | None:
    """The whole object's SHA-256 hex: from our metadata, else from S3's checksum when it covers the
    whole object (a multipart object's checksum is a checksum of its parts)."""
    recorded = metadata.get(SHA256_METADATA_KEY, "").lower()
    if len(recorded) == 64 and all(c in "0123456789abcdef" for c in recorded):
        return recorded
    checksum = response.get("ChecksumSHA256")
    if checksum and "-" not in checksum and response.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
        try:
            return base64.b64decode(checksum, validate=True).hex()
        except binascii.Error:
            return None
    return None


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _from_hex(sha256: str) -> bytes:
    try:
        digest = bytes.fromhex(sha256)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
    return digest
