"""The image digest lock: every image the program renders, by tag, and the digest that tag named.

``images.lock.json`` (repository root) maps an image reference as the program renders it
(``docker.io/tensorflow/serving:2.18.0``) to the digest of what that tag named when the lock was last
refreshed (``sha256:<64 hex>``)::

    {"images": {"docker.io/tensorflow/serving:2.18.0": "sha256:..."}}

* The composition (:func:`stack_images`, :func:`read_lock`) turns each reference into
  ``repo:tag@sha256:<digest>`` when the lock has it, and leaves the tag alone when it does not. The tag
  stays for people; with both, the kubelet and containerd pull by the digest and ignore the tag
  (https://kubernetes.io/docs/concepts/containers/images/#image-names). Components never read this
  file: they take the final reference in their Args.
* :func:`read_lock` refuses a malformed lock (bad JSON, a key that is not ``repo:tag``, a digest that
  is not ``sha256:`` + 64 hex) with one error naming the file and every bad entry. The program calls it
  before it registers any resource.
* ``python -m stacks.images refresh`` resolves every image of every stack file with the registry HTTP
  API v2 (anonymous pull token, ``HEAD /v2/<repo>/manifests/<tag>``) and rewrites the lock, sorted.
  ``.github/workflows/image-digests.yml`` runs it on a schedule. ``list`` and ``check`` print a stack's
  images and which of them the lock lacks. Plain Python (urllib): nothing to install.

The charts (kube-prometheus-stack, the NVIDIA device plugin, DCGM exporter, cluster-autoscaler...)
render their own images; those are the charts' pins, not listed here (docs/images.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from components.serving.canary_router import ROUTER_IMAGE
from components.serving.model_server import serving_image
from components.serving.model_sync import SYNC_IMAGES
from stacks.settings import Server, StackSettings

ROOT = Path(__file__).resolve().parent.parent
LOCK_FILE = ROOT / "images.lock.json"
"""Read by the program at plan time (:func:`read_lock`), written by ``refresh``; a test may point it
elsewhere (the program reads this attribute when it runs)."""
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
"""The only digest form the lock holds: what registries answer for content they hash with SHA-256
(https://github.com/opencontainers/image-spec/blob/main/descriptor.md#digests)."""
# repo[:port]/path:tag, no digest: the form the program renders and the lock's keys take.
TAGGED = re.compile(r"[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MODEL_STORES = {"aws": "s3", "gcp": "gs"}
"""The model store (and so the sync image) of each cloud, as stacks/platform.py passes it."""


class ImageLockError(Exception):
    """A lock file that cannot be used; the message names the file and every bad entry."""


# --- the references ------------------------------------------------------------------------------

def server_image(settings: StackSettings, server: Server) -> str:
    """The TF Serving image a server runs: its ``image``, else the CPU or GPU tag of the version."""
    return server.image or serving_image(settings.serving_image_version, server.gpus)


def sync_image(settings: StackSettings) -> str:
    """The model-sync image of the stack's cloud (aws-cli for S3, google-cloud-cli for GCS)."""
    return SYNC_IMAGES[MODEL_STORES[settings.cloud]]


def stack_images(settings: StackSettings) -> list[str]:
    """Every image reference the stack can render, sorted: each server's TF Serving image, the sync
    image of its cloud and, with ``trafficRouter: proxy``, the nginx router (rendered only while a
    canary is active, listed always: a canary is one config change away, and the lock should be ready)."""
    images = {server_image(settings, s) for s in settings.servers.values()} | {sync_image(settings)}
    if settings.traffic_router == "proxy":
        images.add(ROUTER_IMAGE)
    return sorted(images)


def needs_lock(reference: str) -> bool:
    """Whether a rendered reference takes its digest from the lock (one carrying a digest does not)."""
    return "@" not in reference


def pinned(reference: str, lock: Mapping[str, str]) -> str:
    """``reference@digest`` when the lock has the reference; itself when it has none or carries a
    digest already (a server's ``image`` may: the user pinned it)."""
    if not needs_lock(reference) or reference not in lock:
        return reference
    return f"{reference}@{lock[reference]}"


@dataclass(frozen=True)
class PinnedImages:
    """The final image references of a stack, for the components' Args."""

    servers: dict[str, str]
    """Server name -> TF Serving image."""
    sync: str
    router: str


def as_pulled(settings: StackSettings, reference: str) -> str:
    """A reference as the pods pull it: on GCP with ``dockerHubMirror``, a ``docker.io/`` one
    through the stack's Artifact Registry remote repository (components/gcp/image_mirror.py), with the
    same tag and digest; otherwise itself. The lock stays keyed by the Docker Hub reference."""
    if settings.cloud != "gcp" or not settings.docker_hub_mirror:
        return reference
    from components.gcp.image_mirror import DockerHubMirrorArgs, mirror_prefix, repository_id, through_mirror

    return through_mirror(reference, mirror_prefix(DockerHubMirrorArgs(
        project=settings.gcp_project, region=settings.region, repository_id=repository_id(settings.cluster_name))))


def pinned_images(settings: StackSettings, lock: Mapping[str, str]) -> PinnedImages:
    servers = {key: as_pulled(settings, pinned(server_image(settings, s), lock)) for key, s in settings.servers.items()}
    return PinnedImages(servers=servers, sync=as_pulled(settings, pinned(sync_image(settings), lock)),
                        router=as_pulled(settings, pinned(ROUTER_IMAGE, lock)))


# --- the lock file -------------------------------------------------------------------------------

def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def read_lock(path: Path | None = None) -> dict[str, str]:
    """The lock's ``reference -> digest`` map; empty when the file does not exist (tags only, as
    without a lock). Raises :class:`ImageLockError` naming the file and every bad entry."""
    path = LOCK_FILE if path is None else path
    where = _shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageLockError(f"image lock {where}: cannot read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImageLockError(f"image lock {where}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                             f"{exc.msg})") from None
    if not isinstance(data, dict) or set(data) != {"images"} or not isinstance(data["images"], dict):
        raise ImageLockError(f"image lock {where}: expected "
                             '{"images": {"<repo>:<tag>": "sha256:<64 hex>", ...}} and nothing else '
                             "(docs/images.md)")
    problems = []
    for reference, digest in data["images"].items():
        if not TAGGED.fullmatch(reference):
            problems.append(f"{reference!r}: expected an image reference registry/repository:tag without "
                            "a digest (the form the program renders)")
        elif not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            problems.append(f"{reference} = {json.dumps(digest)}: expected a digest sha256: followed by 64 "
                            "lowercase hex digits")
    if problems:
        noun = "entry" if len(problems) == 1 else "entries"
        raise ImageLockError(f"image lock {where}: {len(problems)} bad {noun} (fix or delete "
                             f"{'it' if len(problems) == 1 else 'them'}, or run "
                             "`python -m stacks.images refresh`):\n"
                             + "\n".join(f"  - {p}" for p in problems))
    return dict(data["images"])


def render_lock(images: Mapping[str, str]) -> str:
    """The lock's text: keys sorted, one entry a line, a final newline (stable diffs)."""
    return json.dumps({"images": dict(sorted(images.items()))}, indent=2) + "\n"


# --- the registry --------------------------------------------------------------------------------

# Asked for in this order of preference. The two list types are the multi-arch index (OCI) and manifest
# list (Docker): offered first, a registry answers a multi-platform tag with the index, so the digest is
# the index's and each node still pulls its own platform. Without them Docker Hub answers with one
# platform's manifest (and that digest pins every node to amd64).
# https://github.com/opencontainers/image-spec/blob/main/image-index.md
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
DOCKER_HUB = "docker.io"
DOCKER_HUB_REGISTRY = "https://registry-1.docker.io"
TIMEOUT_SECONDS = 30


class RefreshError(RuntimeError):
    """A digest that could not be resolved; the message names the image and what the registry said."""


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, reference: str) -> Reference:
        if not TAGGED.fullmatch(reference):
            raise RefreshError(f"{reference}: expected registry/repository:tag")
        name, tag = reference.rsplit(":", 1)
        host, repository = name.split("/", 1)
        # Docker Hub's official images live under library/ (docker.io/nginx = library/nginx).
        if host == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        return cls(host, repository, tag)


Opener = Callable[[urllib.request.Request], "urllib.response.addinfourl"]


def _open(request: urllib.request.Request):
    return urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)  # noqa: S310 (https or a --endpoint)


def _challenge(header: str) -> dict[str, str]:
    """``Bearer realm="...",service="...",scope="..."`` -> its parameters (the token auth spec:
    https://distribution.github.io/distribution/spec/auth/token/)."""
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', params)}


class Registry:
    """Resolves ``repo:tag`` to its digest with the registry HTTP API v2, anonymously.

    ``endpoints`` maps a registry host to a base URL (a pull-through mirror, or a local stand-in in the
    tests); the default is ``https://<host>``, and ``https://registry-1.docker.io`` for docker.io.
    """

    def __init__(self, endpoints: Mapping[str, str] | None = None, opener: Opener = _open):
        self.endpoints = dict(endpoints or {})
        self.opener = opener
        self.tokens: dict[tuple[str, str], str] = {}

    def base_url(self, host: str) -> str:
        if host in self.endpoints:
            return self.endpoints[host].rstrip("/")
        return DOCKER_HUB_REGISTRY if host == DOCKER_HUB else f"https://{host}"

    def _token(self, ref: Reference, challenge: dict[str, str]) -> str:
        """An anonymous pull token from the realm the registry named (Docker Hub:
        auth.docker.io/token?service=registry.docker.io&scope=repository:<repo>:pull)."""
        key = (ref.host, ref.repository)
        if key in self.tokens:
            return self.tokens[key]
        realm = challenge.get("realm")
        if not realm:
            raise RefreshError(f"{ref.host}/{ref.repository}: the registry asks for credentials but names no "
                               "token realm (anonymous pulls only)")
        query = {"scope": f"repository:{ref.repository}:pull"}
        if challenge.get("service"):
            query["service"] = challenge["service"]
        url = f"{realm}?{urllib.parse.urlencode(query)}"
        try:
            with self.opener(urllib.request.Request(url)) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RefreshError(f"{ref.host}/{ref.repository}: the token service {realm} answered {exc.code} "
                               f"{exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RefreshError(f"{ref.host}/{ref.repository}: no token from {realm}: {exc}") from None
        # "token", or "access_token" (OAuth 2 form); the spec allows either.
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise RefreshError(f"{ref.host}/{ref.repository}: the token service {realm} returned no token")
        self.tokens[key] = token
        return token

    def _manifest(self, ref: Reference, method: str) -> tuple[dict[str, str], bytes]:
        url = f"{self.base_url(ref.host)}/v2/{ref.repository}/manifests/{ref.tag}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        for attempt in range(2):
            token = self.tokens.get((ref.host, ref.repository))
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                with self.opener(urllib.request.Request(url, headers=headers, method=method)) as response:
                    return ({k.lower(): v for k, v in response.headers.items()},
                            response.read() if method == "GET" else b"")
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0:
                    self._token(ref, _challenge(exc.headers.get("WWW-Authenticate", "")))
                    continue
                raise RefreshError(f"{ref.host}/{ref.repository}:{ref.tag}: {method} {url} answered "
                                   f"{exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise RefreshError(f"{ref.host}/{ref.repository}:{ref.tag}: {method} {url} failed: "
                                   f"{getattr(exc, 'reason', exc)}") from None
        raise RefreshError(f"{ref.host}/{ref.repository}:{ref.tag}: still 401 with an anonymous pull token "
                           "(a private repository? anonymous pulls only)")

    def digest(self, reference: str) -> str:
        """The digest ``reference`` names now: the index's for a multi-platform tag.

        ``HEAD`` and the ``Docker-Content-Digest`` header (Docker Hub counts a manifest ``GET`` as a pull
        against its rate limit, a ``HEAD`` version check not:
        https://docs.docker.com/docker-hub/usage/pulls/); a registry that sends no such header gets a
        ``GET``, and the digest is the SHA-256 of the manifest's bytes, which is how the header is defined
        (https://github.com/opencontainers/distribution-spec/blob/main/spec.md#pulling-manifests).
        """
        ref = Reference.parse(reference)
        headers, _ = self._manifest(ref, "HEAD")
        digest = headers.get("docker-content-digest")
        if digest is None:
            _, body = self._manifest(ref, "GET")
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if not DIGEST.fullmatch(digest):
            raise RefreshError(f"{reference}: the registry answered the digest {digest!r}, "
                               "not sha256:<64 hex>")
        return digest


# --- the stacks ----------------------------------------------------------------------------------

def stack_names(root: Path = ROOT) -> list[str]:
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def load_stack_settings(stack: str, root: Path = ROOT) -> StackSettings:
    """A stack's validated settings from its stack file (as the program would get them)."""
    from stacks.config import parse_settings
    from stacks.stack_files import load_stack_config

    cfg = load_stack_config(root / "Pulumi.yaml", root / f"Pulumi.{stack}.yaml", stack)
    return parse_settings(cfg.config)


def images_by_stack(stacks: Iterable[str], root: Path = ROOT) -> dict[str, list[str]]:
    return {stack: stack_images(load_stack_settings(stack, root)) for stack in stacks}


def refresh(lock_path: Path, images: Iterable[str], registry: Registry, keep_others: bool = False
            ) -> tuple[dict[str, str], dict[str, str]]:
    """Resolve every image and write the lock, sorted: exactly these images, or with ``keep_others``
    these plus the old entries of other images (a refresh of some stacks only). Nothing is written when
    one image fails: the old lock stays whole. Returns (new lock, old lock)."""
    images = set(images)
    old = read_lock(lock_path) if lock_path.exists() else {}
    new = {k: v for k, v in old.items() if k not in images} if keep_others else {}
    problems = []
    for reference in sorted(images):
        try:
            new[reference] = registry.digest(reference)
        except RefreshError as exc:
            problems.append(str(exc))
    if problems:
        raise RefreshError("lock not written, " + ("; ".join(problems)))
    lock_path.write_text(render_lock(new), encoding="utf-8")
    return new, old


def _endpoint(text: str) -> tuple[str, str]:
    host, sep, url = text.partition("=")
    if not sep or not host or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected HOST=URL, e.g. docker.io=https://mirror.example.com")
    return host, url


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stacks.images", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("list", "print each stack's images and their lock entries"),
                       ("check", "exit 1 when the lock lacks an image a stack renders"),
                       ("refresh", "resolve every stack's images at their registries and rewrite the lock")):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("--stack", action="append", dest="stacks", metavar="STACK",
                             help="a stack (repeatable; default: every Pulumi.<stack>.yaml). refresh "
                                  "--stack keeps the other stacks' entries; without it, entries no stack "
                                  "uses are dropped")
        command.add_argument("--lock", type=Path, default=None,
                             help=f"lock file (default: {_shown(LOCK_FILE)})")
        if name == "refresh":
            command.add_argument("--endpoint", action="append", type=_endpoint, default=[],
                                 metavar="HOST=URL",
                                 help="registry base URL for a host (a mirror); default https://HOST")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from stacks.config import ConfigError
    from stacks.stack_files import StackFileError

    lock_path = args.lock or LOCK_FILE
    try:
        by_stack = images_by_stack(args.stacks or stack_names())
        if args.command == "refresh":
            images = {image for found in by_stack.values() for image in found if needs_lock(image)}
            new, old = refresh(lock_path, images, Registry(dict(args.endpoint)),
                               keep_others=bool(args.stacks))
            for reference in sorted(set(new) | set(old)):
                if old.get(reference) != new.get(reference):
                    print(f"{reference}: {old.get(reference, '(none)')} -> {new.get(reference, '(removed)')}")
            print(f"{_shown(lock_path)}: {len(new)} images")
            return 0
        lock = read_lock(lock_path)
    except (ImageLockError, RefreshError, ConfigError, StackFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if not isinstance(error, RefreshError) else 1
    missing = 0
    for stack, images in by_stack.items():
        for image in images:
            unpinned = needs_lock(image) and image not in lock
            missing += unpinned
            if args.command == "list":
                entry = lock.get(image, "-") if needs_lock(image) else "(its own digest)"
                print(f"{stack}\t{image}\t{entry}")
            elif unpinned:
                print(f"stack {stack}: {image} is not in {_shown(lock_path)}")
    if args.command == "check":
        if missing:
            print(f"{missing} image(s) without a digest: run `python -m stacks.images refresh` (or the "
                  "image-digests workflow, docs/images.md)", file=sys.stderr)
            return 1
        print(f"every image of {', '.join(by_stack)} is in {_shown(lock_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
