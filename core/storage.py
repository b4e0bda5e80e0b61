"""Object storage over the S3 API (AWS S3, MinIO, Ceph, GCS's S3 API): a thin boto3 wrapper.

``TUNESERVE_STORAGE_URL=s3://bucket/prefix`` names the place; everything else (credentials, region,
``AWS_ENDPOINT_URL`` for a MinIO, profiles, instance roles) is boto3's standard configuration, so
nothing here reads a secret. What the registry and the dataset store need from S3 is small: whole
objects put and got, conditional puts (``If-None-Match: *`` creates only, ``If-Match: <etag>``
replaces only what the writer read), listings and deletes. Every failure of the store itself
(unreachable, refused, throttled) becomes :class:`StorageError`, which the API answers with 503 and
``Retry-After``; a lost conditional write is :class:`PreconditionFailed`.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# A lost race between two conditional writers: 412, or 409 while the other's write is in progress (AWS).
CONFLICT_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class StorageError(Exception):
    """The object store failed or refused a request (not a missing key, not a lost condition)."""


class PreconditionFailed(Exception):
    """A conditional write lost: the object exists (create-only) or changed since it was read (If-Match)."""


class StorageUrlInvalid(ValueError):
    """``TUNESERVE_STORAGE_URL`` is not ``s3://bucket[/prefix]``."""


@dataclass(frozen=True)
class Blob:
    body: bytes
    etag: str


def parse_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (prefix without slashes at its ends, may be empty)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise StorageUrlInvalid(f"TUNESERVE_STORAGE_URL must look like s3://bucket/prefix (got {url!r}); "
                                "the endpoint, region and credentials come from the AWS_* variables")
    return parts.netloc, parts.path.strip("/")


def sha256_b64(hex_digest: str) -> str:
    """The base64 form S3's ``ChecksumSHA256`` uses, from a hex digest."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _code(exc: BaseException) -> str:
    response: dict[str, Any] = getattr(exc, "response", {}) or {}
    error = response.get("Error", {})
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code") or status or "")


class Storage:
    """One bucket and prefix; keys given to the methods are relative to the prefix."""

    def __init__(self, url: str, client: S3Client | None = None) -> None:
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        if client is None:
            import boto3
            from botocore.config import Config

            # boto3's own configuration chain: AWS_* variables, AWS_ENDPOINT_URL, profiles, instance roles.
            config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=60)
            client = boto3.session.Session().client("s3", config=config)
        self.client = client

    def full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _call(self, what: str, key: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            if code in CONFLICT_CODES:
                raise PreconditionFailed(f"s3://{self.bucket}/{self.full(key)} changed or exists ({code})") from exc
            raise StorageError(f"object storage: {what} s3://{self.bucket}/{self.full(key)} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"object storage: {what} s3://{self.bucket}/{self.full(key)} failed: {exc}") from exc

    def _missing(self, exc: BaseException) -> bool:
        cause = exc.__cause__
        return cause is not None and _code(cause) in MISSING_CODES

    # -- objects --------------------------------------------------------------------------------
    def put_bytes(self, key: str, body: bytes, if_match: str | None = None, create_only: bool = False) -> str:
        """Write ``body``; with ``if_match`` only over that ETag, with ``create_only`` only if absent.
        Returns the new ETag. Raises :class:`PreconditionFailed` when the condition does not hold."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.full(key), "Body": body,
                                "ChecksumAlgorithm": "SHA256"}
        if if_match is not None:
            args["IfMatch"] = if_match
        if create_only:
            args["IfNoneMatch"] = "*"
        with self._call("put", key):
            return str(self.client.put_object(**args)["ETag"])

    def put_file(self, key: str, path: Path, sha256_hex: str, size: int) -> None:
        """Upload ``path`` with its SHA-256 (the store refuses a body that does not match it), then check
        what the store holds: its size and, where the store keeps it, the same checksum."""
        digest = sha256_b64(sha256_hex)
        with self._call("upload", key), path.open("rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=self.full(key), Body=body, ChecksumSHA256=digest,
                                   ChecksumAlgorithm="SHA256")
        with self._call("verify", key):
            head = self.client.head_object(Bucket=self.bucket, Key=self.full(key), ChecksumMode="ENABLED")
        stored = head.get("ChecksumSHA256")
        if int(head["ContentLength"]) != size or (stored is not None and stored != digest):
            raise StorageError(f"object storage: s3://{self.bucket}/{self.full(key)} holds {head['ContentLength']} "
                               f"bytes (checksum {stored}) after upload, expected {size} ({digest})")

    def get(self, key: str) -> Blob | None:
        """The object and its ETag; None when it does not exist."""
        try:
            with self._call("get", key):
                response = self.client.get_object(Bucket=self.bucket, Key=self.full(key))
                return Blob(response["Body"].read(), str(response["ETag"]))
        except StorageError as exc:
            if self._missing(exc):
                return None
            raise

    def exists(self, key: str) -> bool:
        try:
            with self._call("head", key):
                self.client.head_object(Bucket=self.bucket, Key=self.full(key))
                return True
        except StorageError as exc:
            if self._missing(exc):
                return False
            raise

    def download(self, key: str, dest: Path) -> bool:
        """Copy the object to ``dest``; False when it does not exist."""
        try:
            with self._call("download", key), dest.open("wb") as out:
                self.client.download_fileobj(self.bucket, self.full(key), out)
                return True
        except StorageError as exc:
            if self._missing(exc):
                dest.unlink(missing_ok=True)
                return False
            raise

    # -- listings and deletes -------------------------------------------------------------------
    def _pages(self, prefix: str, delimiter: str | None) -> Iterator[dict[str, Any]]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.full(prefix)}
        if delimiter:
            args["Delimiter"] = delimiter
        with self._call("list", prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(**args):
                yield dict(page)

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (relative to ``prefix``)."""
        start = len(self.full(prefix))
        return [str(item["Key"])[start:] for page in self._pages(prefix, None) for item in page.get("Contents", [])]

    def children(self, prefix: str) -> list[str]:
        """The names one level below ``prefix`` (``prefix`` ends with ``/``): folders and objects alike."""
        start = len(self.full(prefix))
        names: set[str] = set()
        for page in self._pages(prefix, "/"):
            names.update(str(p["Prefix"])[start:].rstrip("/") for p in page.get("CommonPrefixes", []))
            names.update(str(item["Key"])[start:] for item in page.get("Contents", []))
        return sorted(n for n in names if n)

    def any_under(self, prefix: str) -> bool:
        with self._call("list", prefix):
            response = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.full(prefix), MaxKeys=1)
        return int(response.get("KeyCount", 0)) > 0

    def delete(self, keys: list[str]) -> None:
        """Delete ``keys`` (missing ones are fine), in batches of 1000 as the API allows."""
        for start in range(0, len(keys), 1000):
            batch: Any = [{"Key": self.full(k)} for k in keys[start:start + 1000]]
            with self._call("delete", keys[start]):
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if response.get("Errors"):
                raise StorageError(f"object storage: deleting {len(response['Errors'])} objects failed: "
                                   f"{response['Errors'][0]}")

