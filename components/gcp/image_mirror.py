"""An Artifact Registry remote repository in front of Docker Hub, so GKE can stream the serving images.

GKE image streaming only streams images stored in Artifact Registry, standard or remote repositories
(GKE docs, "Use Image streaming to pull container images", requirements); an image pulled straight from
``docker.io`` is downloaded whole, streaming on or not. A remote repository proxies Docker Hub and caches
what it serves: the platform pulls ``docker.io/tensorflow/serving:<tag>@sha256:<digest>`` as
``<region>-docker.pkg.dev/<project>/<repository>/tensorflow/serving:<tag>@sha256:<digest>``: the same
bytes (the digest pins them), from Google's network, without Docker Hub's anonymous pull limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

DOCKER_HUB = "docker.io/"


@dataclass(frozen=True)
class DockerHubMirrorArgs:
    """Inputs of :class:`DockerHubMirror`."""

    project: str
    region: str
    """Location of the repository: the cluster's region, so pulls stay in it."""
    repository_id: str
    """Repository name (lowercase letters, digits, '-'; up to 63 characters)."""


def repository_id(cluster_name: str) -> str:
    """The mirror's repository name for a cluster (GKE names are at most 24 characters: this fits 63)."""
    return f"{cluster_name}-docker-hub"


def mirror_prefix(args: DockerHubMirrorArgs) -> str:
    """``<region>-docker.pkg.dev/<project>/<repository>/``: what replaces ``docker.io/`` in a reference."""
    return f"{args.region}-docker.pkg.dev/{args.project}/{args.repository_id}/"


def in_artifact_registry(reference: str) -> bool:
    """Whether an image is in Artifact Registry (``<location>-docker.pkg.dev/...``): the only images GKE image
    streaming streams; any other is pulled whole."""
    return ".pkg.dev/" in reference


def through_mirror(reference: str, prefix: str) -> str:
    """A ``docker.io/...`` reference pulled through the mirror; any other registry's is left as is."""
    return prefix + reference.removeprefix(DOCKER_HUB) if reference.startswith(DOCKER_HUB) else reference


class DockerHubMirror(pulumi.ComponentResource):
    """Creates: a ``gcp.artifactregistry.Repository`` (Docker format, remote mode, upstream Docker Hub).

    The GKE nodes' service account reads it through its project-level ``roles/artifactregistry.reader``
    (components/gcp/gke_cluster.py). The repository holds only a cache of public images: no protection.
    """

    repository: gcp.artifactregistry.Repository
    prefix: str

    def __init__(self, name: str, args: DockerHubMirrorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:gcp:DockerHubMirror", name, None, opts)
        self.repository = gcp.artifactregistry.Repository(
            f"{name}-repository", project=args.project, location=args.region, repository_id=args.repository_id,
            format="DOCKER", mode="REMOTE_REPOSITORY",
            description="Docker Hub through Artifact Registry: GKE streams images only from Artifact Registry",
            remote_repository_config=gcp.artifactregistry.RepositoryRemoteRepositoryConfigArgs(
                description="Docker Hub",
                docker_repository=gcp.artifactregistry.RepositoryRemoteRepositoryConfigDockerRepositoryArgs(
                    public_repository="DOCKER_HUB")),
            opts=pulumi.ResourceOptions(parent=self))
        self.prefix = mirror_prefix(args)
        self.register_outputs({"prefix": self.prefix})
