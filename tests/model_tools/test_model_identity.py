"""``--role-arn`` (S3: sts:AssumeRole) and ``--impersonate-service-account`` (GCS).

The S3 tests run moto with IAM authorization on (``enable_iam_authentication``): requests are
signed with the keys of real moto IAM users and checked against their policies, like the stack's
bucket policy that lets only the publisher role write. A user who may only assume the role is
denied the bucket with their own keys, so a command that succeeds with ``--role-arn`` made its
S3 calls with the assumed role's credentials.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from model_tools.cli import main
from tests.model_tools.conftest import BUCKET, fake_aws_credentials

STACK = """\
config:
  tfserving-platform:servers:
    default:
      models:
        digits:
          versionPolicy: specific
          versions: [1]
          labels:
            stable: 1
"""


def _policy(actions, resource="*") -> str:
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resource}]}
    )


def _user(iam, name: str, actions) -> dict:
    iam.create_user(UserName=name)
    if actions:
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=_policy(actions))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


@pytest.fixture
def aws(monkeypatch):
    """moto with a bucket, a publisher role allowed s3:*, and users; IAM authorization enforced.

    ``aws.login(user)`` makes the tool use that user's keys (boto3's default session caches the
    credentials it resolved first, so it is reset).
    """
    import boto3
    from moto import mock_aws
    from moto.core import enable_iam_authentication

    fake_aws_credentials(monkeypatch)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam")
        role_arn = iam.create_role(
            RoleName="models-publisher",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
                }
            ),
        )["Role"]["Arn"]
        iam.put_role_policy(RoleName="models-publisher", PolicyName="p", PolicyDocument=_policy("s3:*"))
        users = {
            # may assume the role, nothing else: its own keys are denied the bucket
            "dev": _user(iam, "dev", ["sts:AssumeRole"]),
            # may read the bucket but not assume the role
            "outsider": _user(iam, "outsider", ["s3:ListBucket", "s3:GetObject"]),
        }

        def login(user: str) -> None:
            for k, v in users[user].items():
                monkeypatch.setenv(k, v)
            monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)

        def assumed_sessions() -> list[str]:
            from moto.sts.models import sts_backends

            return [r.session_name for r in sts_backends["123456789012"]["aws"].assumed_roles]

        login("dev")
        monkeypatch.setattr("getpass.getuser", lambda: "alice")
        with enable_iam_authentication():
            yield SimpleNamespace(
                uri=f"s3://{BUCKET}/models", role_arn=role_arn, login=login, sessions=assumed_sessions
            )


def _publish(uri, saved_model, *extra) -> int:
    return main(
        ["publish", str(saved_model), "--bucket-uri", uri, "--model", "digits", "--no-progress", *extra]
    )


def test_publish_needs_the_role_and_writes_with_its_credentials(aws, small_saved_model, capsys):
    assert _publish(aws.uri, small_saved_model) == 2
    err = capsys.readouterr().err
    assert "access denied to s3://" in err and "Traceback" not in err

    assert _publish(aws.uri, small_saved_model, "--role-arn", aws.role_arn) == 0
    assert "version 1 published" in capsys.readouterr().out
    assert aws.sessions() == ["model-tools-publish-alice"]

    # Read back with the role (dev's own keys may not even list): version 1 is complete.
    assert main(["list", "--bucket-uri", aws.uri, "--json", "--role-arn", aws.role_arn]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["complete"]) for v in listed["digits"]] == [(1, True)]


@pytest.mark.parametrize("command", ["list", "check", "promote", "rollback"])
def test_bucket_readers_take_the_role_too(aws, small_saved_model, tmp_path, capsys, command):
    assert _publish(aws.uri, small_saved_model, "--role-arn", aws.role_arn) == 0
    stack = tmp_path / "Pulumi.dev.yaml"
    stack.write_text(STACK)
    args = {
        "list": ["list"],
        "check": ["check", "--stack-file", stack],
        "promote": ["promote", "--stack-file", stack, "--model", "digits", "--version", "1"],
        "rollback": ["rollback", "--stack-file", stack, "--model", "digits", "--to", "1"],
    }[command] + ["--bucket-uri", aws.uri]
    args = list(map(str, args))
    capsys.readouterr()

    assert main(args) == 2  # dev's own keys: denied
    assert "access denied to s3://" in capsys.readouterr().err
    assert main([*args, "--role-arn", aws.role_arn]) == 0, capsys.readouterr().err
    assert aws.sessions()[-1] == f"model-tools-{command}-alice"


@pytest.mark.parametrize(
    "bad",
    [
        "models-publisher",
        "arn:aws:iam::12345:role/models-publisher",  # account id not 12 digits
        "arn:aws:iam::123456789012:user/dev",  # a user, not a role
        "arn:aws:s3:::models-bucket",
        "arn:aws:iam::123456789012:role/",
    ],
)
def test_bad_role_arn_is_refused_before_any_call(aws, small_saved_model, capsys, monkeypatch, bad):
    import boto3

    def no_call(*a, **k):
        raise AssertionError("an AWS client was created for a bad --role-arn")

    monkeypatch.setattr(boto3, "client", no_call)
    assert _publish(aws.uri, small_saved_model, "--role-arn", bad) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and f"invalid --role-arn {bad!r}" in err
    assert "arn:aws:iam::<12-digit account>:role/<name>" in err
    assert aws.sessions() == []


def test_sts_access_denied_is_one_error_naming_the_role(aws, small_saved_model, capsys):
    aws.login("outsider")
    assert _publish(aws.uri, small_saved_model, "--role-arn", aws.role_arn) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot assume role {aws.role_arn}: access denied")
    assert "modelPublisherPrincipals" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_role_arn_with_gs_uri_and_service_account_with_s3_uri_are_refused(capsys):
    arn = "arn:aws:iam::123456789012:role/models-publisher"
    assert main(["list", "--bucket-uri", "gs://b/models", "--role-arn", arn]) == 2
    assert "--role-arn applies to s3:// bucket URIs" in capsys.readouterr().err
    sa = "publisher@my-project.iam.gserviceaccount.com"
    assert main(["list", "--bucket-uri", "s3://b/models", "--impersonate-service-account", sa]) == 2
    assert "--impersonate-service-account applies to gs:// bucket URIs" in capsys.readouterr().err


def test_session_name_falls_back_to_the_pid(monkeypatch):
    import os

    from model_tools.storage import role_session_name

    def no_user():
        raise OSError("no user name")

    monkeypatch.setattr("getpass.getuser", no_user)
    assert role_session_name("publish") == f"model-tools-publish-{os.getpid()}"
    monkeypatch.setattr("getpass.getuser", lambda: "first last/" + "x" * 80)
    name = role_session_name("publish")
    assert name.startswith("model-tools-publish-first-last-") and len(name) == 64


def test_gcs_client_impersonates_the_service_account(monkeypatch, gcs_emulator):
    """The GCS emulator does no auth, so this checks the credentials the client was built with:
    google-auth impersonation of the given account on top of Application Default Credentials."""
    import google.auth
    from google.auth import impersonated_credentials
    from google.auth.credentials import AnonymousCredentials

    from model_tools.storage import open_storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator[1])
    source = AnonymousCredentials()
    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (source, "my-project"))
    sa = "publisher@my-project.iam.gserviceaccount.com"
    storage, _ = open_storage("gs://b/models", impersonate_service_account=sa)
    creds = storage.client._credentials
    assert isinstance(creds, impersonated_credentials.Credentials)
    assert creds.service_account_email == sa
    assert isinstance(creds._source_credentials, AnonymousCredentials)  # google-auth copies the source
    assert creds._target_scopes == ["https://www.googleapis.com/auth/devstorage.read_write"]
    assert storage.client.project == "my-project"


def test_bad_service_account_is_refused(capsys):
    args = ["list", "--bucket-uri", "gs://b/models", "--impersonate-service-account", "me@gmail.com"]
    assert main(args) == 2
    assert "invalid --impersonate-service-account 'me@gmail.com'" in capsys.readouterr().err
