"""The image digest lock (stacks/images.py, images.lock.json): listing, pinning, refusing, refreshing.

* Every image a stack renders is listed from its settings, so the lock can be checked per stack.
* With a lock entry the container image is ``repo:tag@sha256:...`` pulled ``IfNotPresent``; without one
  the tag alone, pulled ``Always``; a malformed lock stops the plan before any resource.
* checkov's CKV_K8S_43 ("Image should use digest", skipped in .checkov.yaml while the lock is empty)
  passes on a Deployment rendered with a filled lock and fails on one rendered with tags.
* The refresh tool speaks the registry HTTP API v2 to a local stand-in registry (``http.server``):
  the anonymous token dance, ``HEAD`` of the manifest with the index media types, the index digest of a
  multi-platform tag (not one platform's), the ``GET`` fallback, errors, and the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pulumi
import pytest
import yaml

from stacks import images
from stacks.mock_engine import Recording, run_program
from stacks.plan import ROOT, write_manifests
from stacks.scan import KUBERNETES, run_checkov
from stacks.stack_files import load_stack_config
from tests.image_lock_helpers import container_images, fake_digest, full_lock, plan_with_lock

STACKS = images.stack_names()
SERVING = "docker.io/tensorflow/serving:2.18.0"
GPU_SERVING = "docker.io/tensorflow/serving:2.18.0-gpu"
ROUTER = "docker.io/nginxinc/nginx-unprivileged:1.28.3-alpine"
AWS_SYNC = "docker.io/amazon/aws-cli:2.17.0"


def untagged(image: str) -> str:
    return image.split("@")[0]


# --- listing -------------------------------------------------------------------------------------

def test_the_stacks_are_the_stack_files():
    assert STACKS == sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
    assert STACKS  # something to check


@pytest.mark.parametrize("stack", STACKS)
def test_the_listed_images_are_the_rendered_ones(request, stack):
    """Whatever the committed lock holds, the plan renders exactly the listed references (plus digests)."""
    recording = request.getfixturevalue({"gke-dev": "gke"}.get(stack, stack))
    rendered = {untagged(image) for image, _ in container_images(recording).values()}
    settings = images.load_stack_settings(stack)
    listed = images.stack_images(settings)
    # Every stack runs a canary through the proxy router, so the router is rendered too. On GCP the
    # TF Serving images come through the Docker Hub mirror (the lock keeps the docker.io reference).
    assert sorted(rendered) == sorted(images.as_pulled(settings, image) for image in listed)
    assert (stack == "gke-dev") == (sorted(rendered) != listed)


def _settings(stack: str = "dev", **overrides):
    from stacks.config import parse_settings

    cfg = load_stack_config(ROOT / "Pulumi.yaml", ROOT / f"Pulumi.{stack}.yaml", stack)
    raw = dict(cfg.config)
    raw.update({f"tfserving-platform:{k}": v if isinstance(v, str) else json.dumps(v)
                for k, v in overrides.items()})
    return parse_settings(raw)


def test_the_listing_follows_the_settings():
    dev = images.stack_images(_settings())
    assert dev == sorted([SERVING, GPU_SERVING, AWS_SYNC, ROUTER])
    gke = images.stack_images(_settings("gke-dev"))
    assert images.SYNC_IMAGES["gs"] in gke and AWS_SYNC not in gke
    # No proxy router: no nginx image to lock (the mesh routes the canary).
    servers = {"cpu": {"nodePool": "system", "gpus": 0, "cpu": "1", "memory": "2Gi",
                       "models": {"digits-cpu": {"versionPolicy": "latest"}}}}
    assert ROUTER not in images.stack_images(_settings(trafficRouter="none", servers=servers))
    # Another version is another reference; a server's own image replaces the default one.
    assert images.stack_images(_settings(servingImageVersion="2.19.0", servers=servers)) == sorted(
        ["docker.io/tensorflow/serving:2.19.0", AWS_SYNC, ROUTER])
    mirror = "registry.example.com:5000/mirror/tensorflow/serving:2.18.0"
    servers["cpu"]["image"] = mirror
    assert mirror in images.stack_images(_settings(servers=servers))


def test_a_reference_with_its_own_digest_is_left_alone():
    own = f"registry.example.com/tensorflow/serving:2.18.0@{fake_digest('own')}"
    lock = {"registry.example.com/tensorflow/serving:2.18.0": fake_digest("lock"),
            SERVING: fake_digest(SERVING)}
    assert images.pinned(own, lock) == own
    assert images.pinned(SERVING, lock) == f"{SERVING}@{fake_digest(SERVING)}"
    assert images.pinned(GPU_SERVING, lock) == GPU_SERVING  # not in the lock: the tag alone
    assert not images.needs_lock(own) and images.needs_lock(SERVING)


# --- pinning in the plan -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dev_partly_locked(tmp_path_factory) -> Recording:
    """dev with only the GPU TF Serving image and the router in the lock (plus an entry no stack uses)."""
    lock = {GPU_SERVING: fake_digest(GPU_SERVING), ROUTER: fake_digest(ROUTER),
            "docker.io/tensorflow/serving:1.0.0": fake_digest("unused")}
    return plan_with_lock("dev", lock, tmp_path_factory.mktemp("partly"))


@pytest.fixture(scope="module")
def dev_locked(tmp_path_factory) -> Recording:
    return plan_with_lock("dev", full_lock("dev"), tmp_path_factory.mktemp("locked"))


def test_lock_entries_pin_their_images_and_the_rest_keep_their_tags(dev_partly_locked):
    found = container_images(dev_partly_locked)
    pinned = {key for key, (image, _) in found.items() if "@" in image}
    assert pinned == {("tfserving-default", "tfserving"), ("tfserving-default-canary", "tfserving"),
                      ("tfserving-default-router", "router")}
    for key, (image, policy) in found.items():
        if key in pinned:
            reference = untagged(image)
            assert image == f"{reference}@{fake_digest(reference)}" and policy == "IfNotPresent", key
        else:
            assert "@" not in image and policy == "Always", key
    assert found[("tfserving-cpu", "tfserving")][0] == SERVING


@pytest.mark.parametrize("stack", ["dev", "gke-dev"])
def test_a_full_lock_pins_every_container(dev_locked, stack, tmp_path):
    recording = dev_locked if stack == "dev" else plan_with_lock(stack, full_lock(stack), tmp_path)
    found = container_images(recording)
    assert found
    settings = images.load_stack_settings(stack)
    by_pulled = {images.as_pulled(settings, ref): ref for ref in images.stack_images(settings)}
    for key, (image, policy) in found.items():
        reference = untagged(image)
        # The digest the lock holds for the Docker Hub reference, whichever registry the pod pulls from.
        assert image == f"{reference}@{fake_digest(by_pulled[reference])}", key
        assert policy == "IfNotPresent", key


# --- a malformed lock ----------------------------------------------------------------------------

def _plan_raw_lock(text: str, tmp_path: Path, monkeypatch) -> tuple[Recording, pulumi.RunError]:
    path = tmp_path / "images.lock.json"
    path.write_text(text)
    monkeypatch.setattr(images, "LOCK_FILE", path)
    cfg = load_stack_config(ROOT / "Pulumi.yaml", ROOT / "Pulumi.dev.yaml", "dev")
    recording = Recording(stack="dev", project=cfg.project)
    with pytest.raises(pulumi.RunError) as raised:
        run_program(ROOT / "__main__.py", "dev", cfg.project, cfg.config, cfg.secret_keys, into=recording)
    return recording, raised.value


@pytest.mark.parametrize("digest", [
    "sha256:" + "a" * 63,           # too short
    "sha256:" + "A" * 64,           # upper case
    "sha512:" + "a" * 128,          # another algorithm
    "a" * 64,                        # no algorithm
    "sha256:" + "g" * 64,           # not hex
    64,                              # not a string
], ids=["short", "upper", "sha512", "bare", "not-hex", "number"])
def test_a_malformed_digest_stops_the_plan_before_any_resource(tmp_path, monkeypatch, digest):
    text = json.dumps({"images": {SERVING: digest, ROUTER: fake_digest(ROUTER)}})
    recording, error = _plan_raw_lock(text, tmp_path, monkeypatch)
    assert not recording.resources, [r.urn for r in recording.resources]
    message = str(error)
    assert str(tmp_path / "images.lock.json") in message and SERVING in message
    assert json.dumps(digest) in message and "sha256: followed by 64 lowercase hex digits" in message
    assert ROUTER not in message  # the good entry is not blamed
    assert "Traceback" not in message


@pytest.mark.parametrize("text, expected", [
    ("{", "not valid JSON (line 1"),
    ('{"docker.io/x/y:1": "sha256:' + "a" * 64 + '"}', 'expected {"images"'),
    (json.dumps({"images": {"docker.io/x/y": "sha256:" + "a" * 64}}),
     "'docker.io/x/y': expected an image reference"),
    (json.dumps({"images": {"docker.io/x/y:1@sha256:" + "a" * 64: "sha256:" + "a" * 64}}),
     "without a digest"),
], ids=["json", "top-level", "no-tag", "key-with-digest"])
def test_a_malformed_lock_file_is_named(tmp_path, monkeypatch, text, expected):
    recording, error = _plan_raw_lock(text, tmp_path, monkeypatch)
    assert not recording.resources
    assert f"image lock {tmp_path / 'images.lock.json'}" in str(error) and expected in str(error)


def test_every_bad_entry_is_listed_at_once(tmp_path):
    path = tmp_path / "lock.json"
    lock = {SERVING: "sha256:x", ROUTER: "y", AWS_SYNC: fake_digest(AWS_SYNC)}
    path.write_text(json.dumps({"images": lock}))
    with pytest.raises(images.ImageLockError, match="2 bad entries") as raised:
        images.read_lock(path)
    assert SERVING in str(raised.value) and ROUTER in str(raised.value) and AWS_SYNC not in str(raised.value)


def test_no_lock_file_means_tags(tmp_path):
    assert images.read_lock(tmp_path / "absent.json") == {}


def test_the_committed_lock_is_valid_and_sorted():
    text = images.LOCK_FILE.read_text()
    lock = images.read_lock()
    assert text == images.render_lock(lock)  # what refresh writes: sorted, stable


# --- checkov CKV_K8S_43 on a locked rendering ------------------------------------------------------

def test_checkov_digest_check_passes_with_the_lock_and_fails_without(dev_locked, dev_partly_locked, tmp_path):
    """One checkov run on three rendered Deployments, without .checkov.yaml (which skips CKV_K8S_43
    until the lock is filled): the GPU server and the router from the fully locked dev plan, and the
    CPU server from the partly locked one (tags only), which proves the check is live."""
    def deployments(recording: Recording, names: set[str]) -> Recording:
        kept = [r for r in recording.resources if r.inputs.get("kind") == "Deployment"
                and r.inputs["metadata"]["name"] in names]
        assert len(kept) == len(names)
        return Recording(stack="dev", project=recording.project, resources=kept)

    manifests = tmp_path / "manifests"
    write_manifests(deployments(dev_locked, {"tfserving-default", "tfserving-default-router"}), manifests)
    write_manifests(deployments(dev_partly_locked, {"tfserving-cpu"}), manifests)
    result = run_checkov({KUBERNETES: "manifests"}, tmp_path, config_file=None)[KUBERNETES]

    def verdicts(check_id: str) -> dict[str, str]:
        found = {c.resource: "passed" for c in result.passed_checks if c.check_id == check_id}
        found |= {c.resource: "failed" for c in result.failed_checks if c.check_id == check_id}
        return found

    assert verdicts("CKV_K8S_43") == {"Deployment.serving.tfserving-default": "passed",
                                      "Deployment.serving.tfserving-default-router": "passed",
                                      "Deployment.serving.tfserving-cpu": "failed"}
    # IfNotPresent with a digest, Always with a tag: the pull-policy check passes on all three.
    assert set(verdicts("CKV_K8S_15").values()) == {"passed"} and len(verdicts("CKV_K8S_15")) == 3


def test_the_checkov_skip_lasts_only_while_the_lock_is_incomplete():
    """.checkov.yaml skips CKV_K8S_43 until the lock holds every image of every stack, then must not."""
    text = (ROOT / ".checkov.yaml").read_text()
    skipped = "CKV_K8S_43" in yaml.safe_load(text)["skip-check"]
    lock = images.read_lock()
    unlocked = [i for found in images.images_by_stack(STACKS).values() for i in found
                if images.needs_lock(i) and i not in lock]
    if not unlocked:
        assert not skipped, "every image is locked: delete the CKV_K8S_43 skip from .checkov.yaml"
        return
    assert skipped, f"{unlocked} render without a digest, so checkov CKV_K8S_43 fails on them"
    reason = text[:text.index("- CKV_K8S_43")].rsplit("# --- kubernetes ---", 1)[1]
    assert "images.lock.json" in reason and "image-digests" in reason


# --- the refresh tool against a stand-in registry --------------------------------------------------

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class StandIn:
    """A registry: ``GET /token`` hands out a pull token per repository; ``HEAD``/``GET
    /v2/<repo>/manifests/<tag>`` wants it, and answers like Docker Hub does: the index when the client
    accepts an index type, else the linux/amd64 manifest."""

    def __init__(self):
        self.tags: dict[tuple[str, str], dict] = {}  # (repo, tag) -> {"index": bytes|None, "amd64": bytes}
        self.requests: list[tuple[str, str, dict]] = []
        self.send_digest_header = True
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repository: str, tag: str, multi_arch: bool = True, build: int = 1) -> str:
        """Content for ``repository:tag`` (another ``build``: the tag was moved); returns the digest
        the lock must hold for it."""
        manifests = {arch: json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "arch": arch,
                                       "build": build, "of": f"{repository}:{tag}"}).encode()
                     for arch in ("amd64", "arm64")}
        entries = [{"mediaType": MANIFEST, "digest": _digest(body), "size": len(body),
                    "platform": {"os": "linux", "architecture": arch}} for arch, body in manifests.items()]
        index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}).encode()
        self.tags[(repository, tag)] = {"index": index if multi_arch else None, "amd64": manifests["amd64"]}
        return _digest(index if multi_arch else manifests["amd64"])

    def amd64_digest(self, repository: str, tag: str) -> str:
        return _digest(self.tags[(repository, tag)]["amd64"])

    def _handler(self):
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _manifest(self, send_body: bool):
                url = urllib.parse.urlsplit(self.path)
                registry.requests.append((self.command, url.path, dict(self.headers)))
                repository, sep, tag = url.path.removeprefix("/v2/").rpartition("/manifests/")
                if not sep:
                    return self.send_error(404)
                if self.headers.get("Authorization") != f"Bearer token-for-{repository}":
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", f'Bearer realm="{registry.url}/token",'
                                     f'service="stand-in.test",scope="repository:{repository}:pull"')
                    self.end_headers()
                    return None
                content = registry.tags.get((repository, tag))
                if content is None:
                    return self.send_error(404, "MANIFEST_UNKNOWN")
                accepted = self.headers.get("Accept", "")
                if content["index"] is not None and INDEX in accepted:
                    body, media_type = content["index"], INDEX
                else:
                    body, media_type = content["amd64"], MANIFEST
                self.send_response(200)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(body)))
                if registry.send_digest_header:
                    self.send_header("Docker-Content-Digest", _digest(body))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)
                return None

            def do_HEAD(self):  # noqa: N802
                self._manifest(send_body=False)

            def do_GET(self):  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/token":
                    return self._manifest(send_body=True)
                query = urllib.parse.parse_qs(url.query)
                registry.requests.append(("GET", url.path, {k: v[0] for k, v in query.items()}))
                scope = query.get("scope", [""])[0]
                if query.get("service") != ["stand-in.test"] or not (
                        scope.startswith("repository:") and scope.endswith(":pull")):
                    return self.send_error(400)
                body = json.dumps({"token": f"token-for-{scope[len('repository:'):-len(':pull')]}"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None

        return Handler

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    registry = StandIn()
    yield registry
    registry.close()


def every_stack_image() -> list[str]:
    return sorted({i for found in images.images_by_stack(STACKS).values() for i in found})


def serve_every_image(stand_in: StandIn) -> dict[str, str]:
    """The stand-in holds every image of every stack (multi-arch); returns the expected lock."""
    expected = {}
    for reference in every_stack_image():
        ref = images.Reference.parse(reference)
        expected[reference] = stand_in.add(ref.repository, ref.tag)
    return expected


def test_refresh_locks_the_index_digest_of_every_image(stand_in, tmp_path):
    expected = serve_every_image(stand_in)
    lock = tmp_path / "images.lock.json"
    registry = images.Registry({"docker.io": stand_in.url, "gcr.io": stand_in.url})
    new, old = images.refresh(lock, every_stack_image(), registry)
    assert old == {} and new == expected == images.read_lock(lock)
    text = lock.read_text()
    assert list(json.loads(text)["images"]) == sorted(expected)
    # The index's digest, not the one of the platform a plain client would get.
    ref = images.Reference.parse(GPU_SERVING)
    assert new[GPU_SERVING] != stand_in.amd64_digest(ref.repository, ref.tag)
    # The token dance, once per repository: 401 with a challenge, a token for exactly that repository.
    tokens = [r for r in stand_in.requests if r[1] == "/token"]
    assert {t[2]["scope"] for t in tokens} == {f"repository:{images.Reference.parse(i).repository}:pull"
                                                for i in expected}
    assert len(tokens) == len({images.Reference.parse(i).repository for i in expected})
    heads = [r for r in stand_in.requests if r[0] == "HEAD"]
    assert all(h[2]["Accept"].split(", ")[:2] == list(images.MANIFEST_TYPES[:2]) for h in heads)
    assert not [r for r in stand_in.requests if r[0] == "GET" and r[1] != "/token"]  # HEAD was enough
    # Deterministic: a second refresh writes the same bytes.
    images.refresh(lock, every_stack_image(),
                   images.Registry({"docker.io": stand_in.url, "gcr.io": stand_in.url}))
    assert lock.read_text() == text


def test_without_the_index_types_the_registry_would_answer_one_platform(stand_in):
    """The stand-in behaves like Docker Hub: the Accept header is what makes the difference."""
    digest = stand_in.add("tensorflow/serving", "2.18.0")
    registry = images.Registry({"docker.io": stand_in.url})
    assert registry.digest(SERVING) == digest
    plain = images.Registry({"docker.io": stand_in.url})
    import unittest.mock as mock
    with mock.patch.object(images, "MANIFEST_TYPES", images.MANIFEST_TYPES[2:]):
        assert plain.digest(SERVING) == stand_in.amd64_digest("tensorflow/serving", "2.18.0") != digest


def test_a_registry_without_the_digest_header_gets_a_get_and_a_hash(stand_in):
    digest = stand_in.add("tensorflow/serving", "2.18.0")
    single = stand_in.add("amazon/aws-cli", "2.17.0", multi_arch=False)
    stand_in.send_digest_header = False
    registry = images.Registry({"docker.io": stand_in.url})
    assert registry.digest(SERVING) == digest
    assert registry.digest(AWS_SYNC) == single  # a single-platform image: its manifest's digest
    assert [r[0] for r in stand_in.requests if r[1].endswith("/manifests/2.18.0")] == ["HEAD", "HEAD", "GET"]


def test_an_unknown_tag_fails_and_leaves_the_lock_alone(stand_in, tmp_path):
    stand_in.add("tensorflow/serving", "2.18.0")
    lock = tmp_path / "images.lock.json"
    lock.write_text(images.render_lock({SERVING: fake_digest(SERVING)}))
    before = lock.read_text()
    with pytest.raises(images.RefreshError) as raised:
        images.refresh(lock, [SERVING, "docker.io/tensorflow/serving:9.9.9"],
                       images.Registry({"docker.io": stand_in.url}))
    assert "docker.io/tensorflow/serving:9.9.9" in str(raised.value) and "404" in str(raised.value)
    assert "lock not written" in str(raised.value)
    assert lock.read_text() == before


def test_an_unreachable_registry_is_named(tmp_path):
    registry = images.Registry({"docker.io": "http://127.0.0.1:9"})  # the discard port: refused
    with pytest.raises(images.RefreshError,
                       match=r"docker.io/tensorflow/serving:2.18.0: HEAD http://127.0.0.1:9"):
        registry.digest(SERVING)


def test_references_map_to_registries():
    hub = images.Reference.parse("docker.io/nginx:1.27")
    assert (hub.host, hub.repository, hub.tag) == ("docker.io", "library/nginx", "1.27")  # official image
    gcr = images.Reference.parse(images.SYNC_IMAGES["gs"])
    assert (gcr.host, gcr.repository) == ("gcr.io", "google.com/cloudsdktool/google-cloud-cli")
    port = images.Reference.parse("registry.example.com:5000/team/app:1.0")
    assert (port.host, port.repository, port.tag) == ("registry.example.com:5000", "team/app", "1.0")
    registry = images.Registry({"registry.example.com:5000": "http://mirror.test/"})
    assert registry.base_url("docker.io") == "https://registry-1.docker.io"
    assert registry.base_url("gcr.io") == "https://gcr.io"
    assert registry.base_url("registry.example.com:5000") == "http://mirror.test"
    with pytest.raises(images.RefreshError, match="expected registry/repository:tag"):
        images.Reference.parse("docker.io/nginx")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
    return subprocess.run([sys.executable, "-m", "stacks.images", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_cli_refreshes_and_checks(stand_in, tmp_path):
    expected = serve_every_image(stand_in)
    lock = tmp_path / "images.lock.json"
    lock.write_text(images.render_lock({}))
    missing = _cli("check", "--lock", str(lock))
    assert missing.returncode == 1
    for stack, found in images.images_by_stack(STACKS).items():
        for image in found:
            assert f"stack {stack}: {image} is not in {lock}" in missing.stdout
    done = _cli("refresh", "--lock", str(lock), "--endpoint", f"docker.io={stand_in.url}",
                "--endpoint", f"gcr.io={stand_in.url}")
    assert done.returncode == 0, done.stderr
    assert images.read_lock(lock) == expected
    assert f"{GPU_SERVING}: (none) -> {expected[GPU_SERVING]}" in done.stdout
    checked = _cli("check", "--lock", str(lock), "--stack", "prod")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "every image of prod is in" in checked.stdout
    listed = _cli("list", "--lock", str(lock), "--stack", "dev")
    assert f"dev\t{ROUTER}\t{expected[ROUTER]}" in listed.stdout.splitlines()
    # A failed refresh exits 1 and says which image.
    stand_in.tags.pop(("nginxinc/nginx-unprivileged", "1.28.3-alpine"))
    failed = _cli("refresh", "--lock", str(lock), "--endpoint", f"docker.io={stand_in.url}",
                  "--endpoint", f"gcr.io={stand_in.url}")
    assert failed.returncode == 1 and ROUTER in failed.stderr and "404" in failed.stderr
    # --stack refreshes some stacks and keeps the others' entries; a full refresh drops unused ones.
    expected_router = stand_in.add("nginxinc/nginx-unprivileged", "1.28.3-alpine", build=2)  # moved
    assert expected_router != expected[ROUTER]
    extra = {**images.read_lock(lock), "docker.io/tensorflow/serving:1.0.0": fake_digest("old")}
    lock.write_text(images.render_lock(extra))
    some = _cli("refresh", "--lock", str(lock), "--stack", "gke-dev",
                "--endpoint", f"docker.io={stand_in.url}", "--endpoint", f"gcr.io={stand_in.url}")
    assert some.returncode == 0, some.stderr
    assert images.read_lock(lock) == {**extra, ROUTER: expected_router}
    everything = _cli("refresh", "--lock", str(lock), "--endpoint", f"docker.io={stand_in.url}",
                      "--endpoint", f"gcr.io={stand_in.url}")
    assert everything.returncode == 0, everything.stderr
    assert images.read_lock(lock) == {**expected, ROUTER: expected_router}
    bad = _cli("refresh", "--endpoint", "docker.io")
    assert bad.returncode == 2 and "expected HOST=URL" in bad.stderr
