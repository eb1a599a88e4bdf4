"""Object storage behind one small interface: S3 (boto3) and GCS (google-cloud-storage).

``s3://`` honours the usual AWS settings (profile, region, ``AWS_ENDPOINT_URL_S3`` for MinIO
or moto); ``gs://`` uses Application Default Credentials, or ``STORAGE_EMULATOR_HOST``.
Every backend error is turned into a ``StorageError`` with a readable message.

``create_exclusive`` writes an object only if none exists under its key, atomically on the server:
S3 conditional writes (``If-None-Match: *``, 412 PreconditionFailed, or 409
ConditionalRequestConflict while another such write is in flight) and GCS preconditions
(``ifGenerationMatch=0``, 412). moto honours ``If-None-Match``; gcp-storage-emulator ignores
``ifGenerationMatch`` (the condition is sent, but the emulator overwrites), and so may an S3-compatible
store without conditional writes.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from model_tools.contract import DEFAULT_MODELS_PREFIX
from model_tools.errors import ToolError

SCHEMES = ("s3", "gs")


class StorageError(ToolError):
    """A storage operation failed (credentials, missing bucket, network, permissions)."""


class ObjectExists(StorageError):
    """``create_exclusive`` found the object already there (another writer was first)."""


@dataclass(frozen=True)
class BucketURI:
    """A parsed ``<scheme>://<bucket>/<prefix>`` URI; ``prefix`` has no leading/trailing slash."""

    scheme: str
    bucket: str
    prefix: str

    def key(self, *parts) -> str:
        """Join the prefix and ``parts`` into an object key."""
        return "/".join(p for p in (self.prefix, *map(str, parts)) if p)

    def uri(self, *parts) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key(*parts)}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")


def parse_bucket_uri(uri: str, default_prefix: str = DEFAULT_MODELS_PREFIX) -> BucketURI:
    """Parse ``s3://bucket/prefix`` or ``gs://bucket/prefix``; no path means ``default_prefix``."""
    if not uri or "://" not in uri:
        raise ToolError(f"invalid bucket URI {uri!r}: expected s3://BUCKET/PREFIX or gs://BUCKET/PREFIX")
    scheme, rest = uri.split("://", 1)
    if scheme not in SCHEMES:
        raise ToolError(
            f"unsupported URI scheme {scheme + '://'!r} in {uri!r}: "
            "use s3://BUCKET/PREFIX or gs://BUCKET/PREFIX"
        )
    bucket, _, path = rest.partition("/")
    if not bucket:
        raise ToolError(f"invalid bucket URI {uri!r}: no bucket name")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ToolError(f"invalid bucket URI {uri!r}: '.' and '..' are not allowed in the prefix")
    prefix = "/".join(parts) if parts else default_prefix
    return BucketURI(scheme, bucket, prefix)


class Storage(abc.ABC):
    """Minimal object-store interface used by publish, list and promote."""

    scheme: str

    def __init__(self, bucket: str):
        self.bucket = bucket

    def uri(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{key}"

    @abc.abstractmethod
    def list(self, prefix: str) -> dict[str, int]:
        """Map of key -> size for every object whose key starts with ``prefix``."""

    @abc.abstractmethod
    def upload_file(self, path: str, key: str, progress: Callable[[int], None] | None = None) -> None:
        """Upload a local file; ``progress(n)`` is called with byte increments."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write a small object."""

    @abc.abstractmethod
    def create_exclusive(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write a small object only if ``key`` does not exist yet; else raise ``ObjectExists``."""

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes | None:
        """Read an object, or None if it does not exist."""

    @abc.abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Delete objects (missing ones are ignored)."""


class S3Storage(Storage):
    """Amazon S3 (or an S3-compatible endpoint) through boto3."""

    scheme = "s3"

    def __init__(self, bucket: str, client=None):
        super().__init__(bucket)
        if client is None:
            import boto3

            with self._errors("create an S3 client"):
                client = boto3.client("s3")
        self.client = client

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        import botocore.exceptions as bex

        try:
            yield
        except bex.NoCredentialsError:
            raise StorageError(
                f"cannot {action}: no AWS credentials found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or run where an IAM role is available)"
            ) from None
        except bex.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            msg = e.response.get("Error", {}).get("Message", str(e))
            if code == "NoSuchBucket":
                raise StorageError(f"cannot {action}: bucket s3://{self.bucket} does not exist") from None
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StorageError(
                    f"cannot {action}: access denied to s3://{self.bucket} ({code}: {msg})"
                ) from None
            raise StorageError(f"cannot {action}: S3 error {code}: {msg}") from None
        except (bex.BotoCoreError, OSError) as e:
            if isinstance(e, FileNotFoundError) and e.filename:
                raise
            raise StorageError(f"cannot {action}: {e}") from None

    def list(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._errors(f"list s3://{self.bucket}/{prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    out[obj["Key"]] = int(obj["Size"])
        return out

    def upload_file(self, path, key, progress=None):
        with self._errors(f"upload {path} to {self.uri(key)}"):
            self.client.upload_file(path, self.bucket, key, Callback=progress)

    def put_bytes(self, key, data, content_type="application/octet-stream"):
        with self._errors(f"write {self.uri(key)}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def create_exclusive(self, key, data, content_type="application/octet-stream"):
        import botocore.exceptions as bex

        with self._errors(f"create {self.uri(key)}"):
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, IfNoneMatch="*"
                )
            except bex.ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
                    raise ObjectExists(f"{self.uri(key)} already exists ({code or status})") from None
                raise

    def get_bytes(self, key):
        import botocore.exceptions as bex

        with self._errors(f"read {self.uri(key)}"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except bex.ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

    def delete(self, keys):
        with self._errors(f"delete objects in s3://{self.bucket}"):
            for i in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[i : i + 1000]]
                resp = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                if resp.get("Errors"):
                    first = resp["Errors"][0]
                    raise StorageError(f"cannot delete {self.uri(first['Key'])}: {first.get('Message')}")


class _ProgressReader:
    """File wrapper reporting bytes read, so GCS uploads can drive a progress bar."""

    def __init__(self, f, progress: Callable[[int], None]):
        self._f = f
        self._progress = progress

    def read(self, size=-1):
        data = self._f.read(size)
        if data:
            self._progress(len(data))
        return data

    def __getattr__(self, name):
        return getattr(self._f, name)


class GCSStorage(Storage):
    """Google Cloud Storage through google-cloud-storage (honours STORAGE_EMULATOR_HOST)."""

    scheme = "gs"

    def __init__(self, bucket: str, client=None):
        super().__init__(bucket)
        if client is None:
            with self._errors("create a GCS client"):
                from google.cloud import storage as gcs

                client = gcs.Client()
        self.client = client

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        from google.api_core import exceptions as gex
        from google.auth import exceptions as aex

        try:
            yield
        except aex.DefaultCredentialsError:
            raise StorageError(
                f"cannot {action}: no Google credentials found (run `gcloud auth application-default login` "
                "or set GOOGLE_APPLICATION_CREDENTIALS)"
            ) from None
        except gex.NotFound as e:
            raise StorageError(
                f"cannot {action}: not found (does bucket gs://{self.bucket} exist?): {e.message}"
            ) from None
        except gex.Forbidden as e:
            raise StorageError(f"cannot {action}: access denied to gs://{self.bucket}: {e.message}") from None
        except gex.GoogleAPIError as e:
            raise StorageError(f"cannot {action}: GCS error: {e}") from None
        except (aex.GoogleAuthError, ConnectionError) as e:
            raise StorageError(f"cannot {action}: {e}") from None
        except OSError as e:
            if isinstance(e, FileNotFoundError) and e.filename:
                raise
            raise StorageError(f"cannot {action}: {e}") from None

    def list(self, prefix):
        with self._errors(f"list gs://{self.bucket}/{prefix}"):
            return {b.name: int(b.size or 0) for b in self.client.list_blobs(self.bucket, prefix=prefix)}

    def upload_file(self, path, key, progress=None):
        import os

        with self._errors(f"upload {path} to {self.uri(key)}"):
            blob = self.client.bucket(self.bucket).blob(key)
            with open(path, "rb") as f:
                stream = _ProgressReader(f, progress) if progress else f
                blob.upload_from_file(stream, size=os.path.getsize(path), rewind=False)

    def put_bytes(self, key, data, content_type="application/octet-stream"):
        with self._errors(f"write {self.uri(key)}"):
            self.client.bucket(self.bucket).blob(key).upload_from_string(data, content_type=content_type)

    def create_exclusive(self, key, data, content_type="application/octet-stream"):
        from google.api_core import exceptions as gex

        with self._errors(f"create {self.uri(key)}"):
            try:
                self.client.bucket(self.bucket).blob(key).upload_from_string(
                    data, content_type=content_type, if_generation_match=0
                )
            except gex.PreconditionFailed:
                raise ObjectExists(f"{self.uri(key)} already exists (PreconditionFailed)") from None

    def get_bytes(self, key):
        from google.api_core import exceptions as gex

        with self._errors(f"read {self.uri(key)}"):
            try:
                return self.client.bucket(self.bucket).blob(key).download_as_bytes()
            except gex.NotFound:
                return None

    def delete(self, keys):
        from google.api_core import exceptions as gex

        with self._errors(f"delete objects in gs://{self.bucket}"):
            bucket = self.client.bucket(self.bucket)
            for key in keys:
                try:
                    bucket.blob(key).delete()
                except gex.NotFound:
                    pass


BACKENDS: dict[str, type[Storage]] = {"s3": S3Storage, "gs": GCSStorage}


def open_storage(bucket_uri: str | BucketURI) -> tuple[Storage, BucketURI]:
    """Parse ``bucket_uri`` and return the matching backend with the parsed URI."""
    parsed = bucket_uri if isinstance(bucket_uri, BucketURI) else parse_bucket_uri(bucket_uri)
    return BACKENDS[parsed.scheme](parsed.bucket), parsed
