"""Object storage behind one small interface: S3 (boto3) and GCS (google-cloud-storage).

``s3://`` honours the usual AWS settings (profile, region, ``AWS_ENDPOINT_URL_S3`` for MinIO
or moto); ``gs://`` uses Application Default Credentials, or ``STORAGE_EMULATOR_HOST``.
``open_storage(..., role_arn=...)`` makes the S3 client use credentials from ``sts:AssumeRole`` on
that role (the stack's publisher role: the bucket policy denies object writes to anyone else), and
``impersonate_service_account=...`` makes the GCS client impersonate that service account.
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
import getpass
import os
import re
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


# An IAM role ARN (partitions aws, aws-cn, aws-us-gov, ...): role names and paths use [\w+=,.@-]
# (https://docs.aws.amazon.com/IAM/latest/APIReference/API_Role.html).
ROLE_ARN_PATTERN = re.compile(r"^arn:aws[-a-z]*:iam::\d{12}:role/[\w+=,.@/-]+$")
# A service account e-mail: <name>@<project>.iam.gserviceaccount.com, or a Google-managed one
# (<number>-compute@developer.gserviceaccount.com, <project>@appspot.gserviceaccount.com).
SERVICE_ACCOUNT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*@[a-z0-9.-]+\.gserviceaccount\.com$")
# RoleSessionName: 2-64 characters of [\w+=,.@-]
# (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html).
_SESSION_NAME_BAD = re.compile(r"[^\w+=,.@-]")
_GCS_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]


def check_role_arn(role_arn: str) -> str:
    """Refuse a value that is not an IAM role ARN, before any AWS call."""
    if not ROLE_ARN_PATTERN.match(role_arn or ""):
        raise ToolError(
            f"invalid --role-arn {role_arn!r}: expected an IAM role ARN, "
            "arn:aws:iam::<12-digit account>:role/<name> (e.g. `pulumi stack output modelPublisherRoleArn`)"
        )
    return role_arn


def check_service_account(email: str) -> str:
    """Refuse a value that is not a service account e-mail, before any Google call."""
    if not SERVICE_ACCOUNT_PATTERN.match(email or ""):
        raise ToolError(
            f"invalid --impersonate-service-account {email!r}: expected a service account e-mail, "
            "<name>@<project>.iam.gserviceaccount.com (e.g. `pulumi stack output "
            "modelPublisherServiceAccount`)"
        )
    return email


def role_session_name(command: str) -> str:
    """``model-tools-<command>-<user or pid>``, shown in CloudTrail as who used the role."""
    try:
        who = getpass.getuser()
    except Exception:  # no user name in a bare container: getuser raises (OSError or KeyError)
        who = ""
    name = _SESSION_NAME_BAD.sub("-", f"model-tools-{command}-{who or os.getpid()}")
    return name[:64]


def assumed_role_client(service: str, role_arn: str, session_name: str):
    """A boto3 client for ``service`` with credentials from ``sts:AssumeRole`` on ``role_arn``.

    STS is called with the usual credential chain, region and endpoint settings
    (``AWS_ENDPOINT_URL_STS`` / ``AWS_ENDPOINT_URL``); the new client keeps them too, only the
    keys change. The credentials last the role's default session (1 hour) and are not refreshed.
    """
    import boto3
    import botocore.exceptions as bex

    action = f"assume role {role_arn}"
    try:
        creds = boto3.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=session_name)[
            "Credentials"
        ]
    except bex.NoCredentialsError:
        raise StorageError(
            f"cannot {action}: no AWS credentials found to call STS with (set AWS_PROFILE, or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        ) from None
    except bex.ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        msg = e.response.get("Error", {}).get("Message", str(e))
        if code == "AccessDenied":
            raise StorageError(
                f"cannot {action}: access denied ({msg}). Your identity must be allowed to assume it: "
                "stack config modelPublisherPrincipals (see model_tools/README.md, "
                "'Publish as the publisher identity')"
            ) from None
        raise StorageError(f"cannot {action}: STS error {code}: {msg}") from None
    except bex.BotoCoreError as e:
        raise StorageError(f"cannot {action}: {e}") from None
    return boto3.client(
        service,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


class S3Storage(Storage):
    """Amazon S3 (or an S3-compatible endpoint) through boto3.

    With ``role_arn`` the client is created on first use from ``sts:AssumeRole`` credentials, so
    a publish still checks its input (model name, SavedModel files) before calling AWS.
    """

    scheme = "s3"

    def __init__(self, bucket: str, client=None, role_arn: str | None = None, session_name: str = ""):
        super().__init__(bucket)
        self.role_arn = check_role_arn(role_arn) if role_arn else None
        self.session_name = session_name or role_session_name("tool")
        if client is None and not self.role_arn:
            import boto3

            with self._errors("create an S3 client"):
                client = boto3.client("s3")
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = assumed_role_client("s3", self.role_arn, self.session_name)
        return self._client

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

    def __init__(self, bucket: str, client=None, impersonate_service_account: str | None = None):
        super().__init__(bucket)
        if impersonate_service_account:
            check_service_account(impersonate_service_account)
        if client is None:
            with self._errors("create a GCS client"):
                from google.cloud import storage as gcs

                if impersonate_service_account:
                    client = gcs.Client(**_impersonated(impersonate_service_account))
                else:
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


def _impersonated(email: str) -> dict:
    """``gcs.Client`` arguments that impersonate ``email`` from Application Default Credentials
    (the caller needs roles/iam.serviceAccountTokenCreator on it; tokens are minted on first use
    and refreshed by google-auth:
    https://googleapis.dev/python/google-auth/latest/reference/google.auth.impersonated_credentials.html).
    """
    import google.auth
    from google.auth import impersonated_credentials

    source, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    creds = impersonated_credentials.Credentials(
        source_credentials=source, target_principal=email, target_scopes=_GCS_SCOPES
    )
    return {"credentials": creds, **({"project": project} if project else {})}


BACKENDS: dict[str, type[Storage]] = {"s3": S3Storage, "gs": GCSStorage}


def open_storage(
    bucket_uri: str | BucketURI,
    role_arn: str | None = None,
    impersonate_service_account: str | None = None,
    command: str = "tool",
) -> tuple[Storage, BucketURI]:
    """Parse ``bucket_uri`` and return the matching backend with the parsed URI.

    ``role_arn`` (s3:// only) and ``impersonate_service_account`` (gs:// only) choose the identity;
    both are checked before any call.
    """
    parsed = bucket_uri if isinstance(bucket_uri, BucketURI) else parse_bucket_uri(bucket_uri)
    if role_arn and parsed.scheme != "s3":
        raise ToolError(
            f"--role-arn applies to s3:// bucket URIs, not {parsed}; for gs:// use "
            "--impersonate-service-account"
        )
    if impersonate_service_account and parsed.scheme != "gs":
        raise ToolError(
            f"--impersonate-service-account applies to gs:// bucket URIs, not {parsed}; "
            "for s3:// use --role-arn"
        )
    if parsed.scheme == "s3" and role_arn:
        return S3Storage(parsed.bucket, role_arn=role_arn, session_name=role_session_name(command)), parsed
    if parsed.scheme == "gs" and impersonate_service_account:
        return GCSStorage(parsed.bucket, impersonate_service_account=impersonate_service_account), parsed
    return BACKENDS[parsed.scheme](parsed.bucket), parsed
