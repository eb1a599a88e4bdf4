"""Command line: ``python -m model_tools <subcommand> ...`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from model_tools.errors import ToolError

DESCRIPTION = """\
Model lifecycle tooling for the TF Serving platform.

Ship a model:  export -> inspect -> publish -> promote -> `pulumi up --stack <stack>` -> smoke.
Pulumi is never needed by these commands; see model_tools/README.md.
"""


def _cmd_export(a) -> int:
    from model_tools.deps import require
    from model_tools.export import export_digits

    # Before the dataset is loaded and training starts, not after.
    require("export", "keras", "tensorflow", "sklearn", *(["tensorflow_serving"] if a.warmup else []))
    export_digits(
        a.out, epochs=a.epochs, seed=a.seed, warmup=a.warmup, force=a.force, model_name=a.model_name
    )
    return 0


def _cmd_inspect(a) -> int:
    from model_tools.inspect_model import inspect, render, run_example, to_json

    ins = inspect(a.saved_model, model_name=a.model_name, signature=a.signature, batch=a.batch_size)
    if a.json:
        print(json.dumps(to_json(ins), indent=2))
    else:
        print(render(ins, a.rest_host))
    if a.run:
        shapes = run_example(a.saved_model, ins.signatures[a.signature], ins.rest_body)
        print(
            f"\nran the example request on the loaded model: output shapes {shapes}",
            file=sys.stderr if a.json else sys.stdout,
        )
    return 0


def _storage(a):
    """The bucket under ``--role-arn`` / ``--impersonate-service-account``, or None: the library
    functions then open it with the usual credentials. Both values are checked here, before any call."""
    if not (a.role_arn or a.impersonate_service_account):
        return None
    from model_tools.storage import open_storage

    return open_storage(
        a.bucket_uri,
        role_arn=a.role_arn,
        impersonate_service_account=a.impersonate_service_account,
        command=a.command,
    )[0]


def _publish_storages(a) -> list:
    """One storage (or None: the usual credentials) per ``--bucket-uri``: ``--role-arn`` /
    ``--impersonate-service-account`` given once per bucket, in the same order, or not at all."""
    from model_tools.storage import open_storage

    uris = a.bucket_uri
    storages = []
    for flag, given in (("--role-arn", a.role_arn), ("--impersonate-service-account", a.impersonate_service_account)):
        if given and len(given) != len(uris):
            raise ToolError(f"{flag} is given {len(given)} time(s) for {len(uris)} --bucket-uri: give it once per "
                            "--bucket-uri, in the same order (each region's bucket has its own publisher identity)")
    for index, uri in enumerate(uris):
        role = a.role_arn[index] if a.role_arn else None
        account = a.impersonate_service_account[index] if a.impersonate_service_account else None
        storages.append(open_storage(uri, role_arn=role, impersonate_service_account=account,
                                     command=a.command)[0] if (role or account) else None)
    return storages


def _cmd_publish(a) -> int:
    from model_tools.publish import publish, publish_to_all

    progress = True if a.progress else (False if a.no_progress else None)
    storages = _publish_storages(a)
    if len(a.bucket_uri) == 1:
        result = publish(
            a.saved_model, a.bucket_uri[0], a.model, version=a.version, force=a.force, progress=progress,
            storage=storages[0],
        )
    else:
        # One version number in every region's bucket, each bucket's marker written last in it.
        result = publish_to_all(
            a.saved_model, a.bucket_uri, a.model, version=a.version, force=a.force, progress=progress,
            storages=storages,
        )[0]
    print(
        f"version {result.version} published; canary it (share of traffic: the server's canaryWeight) with:\n"
        f"  pulumi config set --path 'servers.<server>.models.{result.model}.canaryVersion' {result.version}\n"
        f"or make it stable at once with:\n"
        f"  python -m model_tools promote --stack-file Pulumi.<stack>.yaml --model {result.model} "
        f"--version {result.version} --label stable --bucket-uri {a.bucket_uri[0]}"
    )
    return 0


def _cmd_list(a) -> int:
    from model_tools.contract import check_model_name
    from model_tools.publish import format_versions, list_models, scan_versions
    from model_tools.storage import open_storage

    storage, base = open_storage(
        a.bucket_uri, role_arn=a.role_arn, impersonate_service_account=a.impersonate_service_account,
        command=a.command,
    )
    models = [check_model_name(a.model)] if a.model else list_models(storage, base)
    report = {m: scan_versions(storage, base, m, read_markers=True) for m in models}
    if a.json:
        print(
            json.dumps(
                {
                    m: [
                        {
                            "version": v.version,
                            "complete": v.complete,
                            "files": v.files,
                            "bytes": v.bytes,
                            "published_at": (v.marker or {}).get("published_at"),
                        }
                        for v in vs
                    ]
                    for m, vs in report.items()
                },
                indent=2,
            )
        )
    elif not report:
        print(f"no models under {base}")
    else:
        print("\n".join(format_versions(m, vs) for m, vs in report.items()))
    return 0


def _report_change(change) -> int:
    print(change.summary())
    if change.changed:
        print(f"apply it with:\n  {change.apply_command()}")
    return 0


def _cmd_promote(a) -> int:
    from model_tools.labels import promote

    return _report_change(
        promote(a.stack_file, a.model, a.version, a.label, a.bucket_uri, pin=a.pin, storage=_storage(a))
    )


def _cmd_rollback(a) -> int:
    from model_tools.labels import rollback

    return _report_change(
        rollback(
            a.stack_file, a.model, a.bucket_uri, label=a.label, to=a.to, pin=a.pin,
            previous_published=a.previous_published, storage=_storage(a),
        )
    )


def _cmd_check(a) -> int:
    from model_tools.labels import check_stack

    report = check_stack(a.stack_file, a.bucket_uri, storage=_storage(a))
    print(report.render())
    report.raise_if_missing()
    return 0


def _cmd_smoke(a) -> int:
    from model_tools.smoke import run_smoke

    if a.grpc_target:
        from model_tools.deps import require

        # The gRPC check runs after the REST one: without its packages it would fail only after
        # the REST requests passed, so ask for them first.
        require("smoke --grpc-target", "grpc", "numpy", "tensorflow", "tensorflow_serving")
    run_smoke(
        a.rest_url,
        a.model,
        n=a.n,
        grpc_target=a.grpc_target,
        signature=a.signature,
        version=a.version,
        label=a.label,
        batch=a.batch_size,
        timeout=a.timeout,
        max_p99_ms=a.max_p99_ms,
    )
    return 0


def _cmd_tflite(a) -> int:
    from model_tools.edge import export_tflite

    export_tflite(a.saved_model, a.out, quantization=a.quantize, seed=a.seed, evaluate=not a.no_eval)
    return 0


def _add_stack_model(s: argparse.ArgumentParser) -> None:
    s.add_argument("--stack-file", required=True, help="Pulumi.<stack>.yaml to edit")
    s.add_argument("--model", required=True, help="model name")


def _add_pin(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--pin",
        action="store_true",
        help="if the model uses versionPolicy latest (which takes no labels), switch it to specific "
        "with the versions it loads now plus the target",
    )


def _add_identity(s: argparse.ArgumentParser, per_bucket: bool = False) -> None:
    """``per_bucket``: the flags repeat, once per ``--bucket-uri`` (publish to several regions)."""
    repeat = {"action": "append"} if per_bucket else {}
    each = " (once per --bucket-uri, same order)" if per_bucket else ""
    s.add_argument(
        "--role-arn",
        metavar="ARN",
        help="s3:// only: use credentials from sts:AssumeRole on this IAM role (publish needs the "
        "stack's publisher role: pulumi stack output modelPublisherRoleArn)" + each,
        **repeat,
    )
    s.add_argument(
        "--impersonate-service-account",
        metavar="EMAIL",
        help="gs:// only: impersonate this service account from Application Default Credentials "
        "(publish needs pulumi stack output modelPublisherServiceAccount)" + each,
        **repeat,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m model_tools",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True
    bucket_help = (
        "bucket URI with prefix, e.g. s3://my-bucket/models or gs://my-bucket/models (no path: 'models')"
    )

    s = sub.add_parser(
        "export",
        help="train the example digits classifier and export a SavedModel",
        description="Train the example digits classifier (scikit-learn's bundled digits, nothing "
        "downloaded) and export a SavedModel with serving_default, predict_proba and "
        "embed signatures. Prints held-out accuracy and size.",
    )
    s.add_argument("--out", required=True, help="SavedModel directory to write")
    s.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    s.add_argument("--seed", type=int, default=0, help="seed for the split, init and shuffling (default 0)")
    s.add_argument(
        "--warmup",
        type=int,
        default=0,
        metavar="N",
        help="write N (<= 1000) warmup requests to assets.extra/tf_serving_warmup_requests",
    )
    s.add_argument(
        "--model-name", default="digits", help="model name used in warmup requests (default digits)"
    )
    s.add_argument("--force", action="store_true", help="replace --out if it exists")
    s.set_defaults(func=_cmd_export)

    s = sub.add_parser(
        "inspect",
        help="print signatures and example REST/gRPC requests of a SavedModel",
        description="Print every signature (input/output names, dtypes, shapes) and the exact REST "
        "body and gRPC PredictRequest a client sends. Refuses a model without a "
        "serving_default signature.",
    )
    s.add_argument("saved_model", help="SavedModel directory")
    s.add_argument("--model-name", help="model name for the requests (default: from the directory name)")
    s.add_argument("--signature", default="serving_default", help="signature for the example requests")
    s.add_argument("--batch-size", type=int, default=1, help="instances in the example requests (default 1)")
    s.add_argument("--rest-host", default="localhost:8501", help="host:port shown in the REST URL")
    s.add_argument("--run", action="store_true", help="also load the model and run the example request")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=_cmd_inspect)

    s = sub.add_parser(
        "publish",
        help="upload a SavedModel as a new version (the next or a given number); marker written last",
        description="Upload a SavedModel directory to <bucket-uri>/<model>/<version>/ and write the "
        "_COMPLETE marker last. Version: one more than the highest version directory "
        "present (complete or not), or --version. The number is claimed first (_PUBLISHING, "
        "created only if absent) and the marker is created only if absent, so a concurrent "
        "publish of the same number fails and asks you to publish again. A published version "
        "is immutable: publish a changed model as a new version.",
    )
    s.add_argument("saved_model", help="SavedModel directory")
    s.add_argument("--bucket-uri", required=True, action="append",
                   help=bucket_help + "; repeat it for each region's bucket: one version number in all of "
                   "them, each bucket's marker written last in it (docs/multi-region.md)")
    s.add_argument("--model", required=True, help="model name (e.g. digits)")
    s.add_argument("--version", type=int, help="version number (default: next free, in all buckets)")
    s.add_argument(
        "--force",
        action="store_true",
        help="clean up an INCOMPLETE version (a failed upload: no _COMPLETE marker) and upload it "
        "again; a published version is never replaced, even with --force",
    )
    g = s.add_mutually_exclusive_group()
    g.add_argument("--progress", action="store_true", help="always show the progress bar")
    g.add_argument(
        "--no-progress", action="store_true", help="never show the progress bar (default: on a terminal)"
    )
    _add_identity(s, per_bucket=True)
    s.set_defaults(func=_cmd_publish)

    s = sub.add_parser(
        "list",
        help="list versions in the bucket and whether each is complete",
        description="List model versions under the bucket URI with their state (complete = the "
        "_COMPLETE marker exists).",
    )
    s.add_argument("--bucket-uri", required=True, help=bucket_help)
    s.add_argument("--model", help="only this model (default: every model under the prefix)")
    s.add_argument("--json", action="store_true", help="print JSON")
    _add_identity(s)
    s.set_defaults(func=_cmd_list)

    s = sub.add_parser(
        "promote",
        help="point a version label at a published version in a stack file",
        description="Move a TF Serving version label (default stable) to a published version in "
        "Pulumi.<stack>.yaml (comments and order kept). With versionPolicy specific the "
        "version is added to versions; versionPolicy latest takes no labels (see --pin). "
        "Prints the pulumi command that applies it.",
    )
    _add_stack_model(s)
    s.add_argument("--version", required=True, help="published version to label")
    s.add_argument("--label", default="stable", help="label to move (default stable; e.g. canary)")
    s.add_argument(
        "--bucket-uri", required=True, help=bucket_help + "; used to check the version is published"
    )
    _add_pin(s)
    _add_identity(s)
    s.set_defaults(func=_cmd_promote)

    s = sub.add_parser(
        "rollback",
        help="move a label back to the version it had before its last promotion",
        description="Move a label (default stable) back to the version it had before promote last "
        "moved it, as promote recorded in a '# model_tools history: ...' comment on the "
        "label's line, or to --to N. Without that record it refuses, unless --previous-published "
        "asks for the highest published version below the current one (which may be a rejected "
        "canary).",
    )
    _add_stack_model(s)
    s.add_argument("--label", default="stable", help="label to move (default stable)")
    s.add_argument("--to", help="version to roll back to (default: the one recorded before the current)")
    s.add_argument(
        "--previous-published",
        action="store_true",
        help="without a recorded history: the highest published version below the current one",
    )
    s.add_argument("--bucket-uri", required=True, help=bucket_help)
    _add_pin(s)
    _add_identity(s)
    s.set_defaults(func=_cmd_rollback)

    s = sub.add_parser(
        "check",
        help="check that every model version a stack file needs is published (run before pulumi up)",
        description="List every server/model/version Pulumi.<stack>.yaml needs from the bucket "
        "(versionPolicy specific: each of versions, canaryVersion and labelled versions; latest and "
        "all: at least one published version) and exit 1 naming each one that is not published "
        "(no _COMPLETE marker): new pods would wait in Init for it.",
    )
    s.add_argument("--stack-file", required=True, help="Pulumi.<stack>.yaml to check")
    s.add_argument("--bucket-uri", required=True, help=bucket_help)
    _add_identity(s)
    s.set_defaults(func=_cmd_check)

    s = sub.add_parser(
        "smoke",
        help="smoke-test a deployed TF Serving endpoint",
        description="Check model status (all versions AVAILABLE), fetch the signature, send N REST "
        "predicts (and gRPC with --grpc-target), check output shapes and dtypes, print "
        "p50/p90/p99 latency. Exits 1 on any failure.",
    )
    s.add_argument("--rest-url", required=True, help="REST base URL, e.g. http://host:8501")
    s.add_argument("--grpc-target", help="gRPC host:port, e.g. host:8500 (optional)")
    s.add_argument("--model", required=True, help="model name")
    s.add_argument(
        "-n", "--requests", dest="n", type=int, default=10, help="requests per protocol (default 10)"
    )
    s.add_argument("--batch-size", type=int, default=1, help="instances per request (default 1)")
    s.add_argument(
        "--signature", default="serving_default", help="signature to call (default serving_default)"
    )
    g = s.add_mutually_exclusive_group()
    g.add_argument("--version", type=int, help="target a specific version")
    g.add_argument("--label", help="target a version label (e.g. canary)")
    s.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds (default 10)")
    s.add_argument("--max-p99-ms", type=float, help="fail if p99 latency exceeds this")
    s.set_defaults(func=_cmd_smoke)

    s = sub.add_parser(
        "tflite",
        help="convert to TFLite (dynamic-range or float16 quantization)",
        description="Convert the serving_default signature to TFLite and report size; for the "
        "digits example also accuracy versus the SavedModel on the held-out split.",
    )
    s.add_argument("saved_model", help="SavedModel directory")
    s.add_argument("--out", required=True, help="output .tflite file")
    s.add_argument(
        "--quantize",
        choices=["dynamic", "float16", "none"],
        default="dynamic",
        help="quantization (default dynamic)",
    )
    s.add_argument("--seed", type=int, default=0, help="split seed used by export (default 0)")
    s.add_argument("--no-eval", action="store_true", help="skip the accuracy comparison")
    s.set_defaults(func=_cmd_tflite)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print ``error: ...`` and return a non-zero code (no traceback)."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info logs
    try:
        return args.func(args)
    except ToolError as e:
        sys.stdout.flush()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except ModuleNotFoundError as e:
        # Imports of the optional packages are deferred to the subcommands that need them (so `--help`
        # and the bucket commands run without TensorFlow): a missing one surfaces here.
        from model_tools.deps import missing_message

        message = missing_message(args.command, e.name or "")
        if message is None:
            raise
        sys.stdout.flush()
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
