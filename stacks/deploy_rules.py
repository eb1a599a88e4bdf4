"""Deploy-semantics rules: what a real ``pulumi up`` does with the plan, beyond each object's shape.

Schemas, checkov and promtool judge what each object looks like. They cannot see ordering, awaits,
or what must exist in the cloud before a call succeeds. Each rule below encodes one such behaviour,
read from the upstream source named in :data:`RULES`, and judges the recorded plan (resources,
inputs, dependencies, providers). ``python -m stacks plan`` runs them; a violation is a plan error
naming the resource and the rule. ``tests/test_deploy_rules.py`` breaks each rule on purpose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from stacks.mock_engine import DEPLOY_ROLE, Recording, RecordedResource

SKIP_AWAIT = "pulumi.com/skipAwait"
BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2", "gcp:storage/bucket:Bucket")
# Kinds pulumi-kubernetes waits for (provider/pkg/await/awaiters.go `awaiters`; ConfigMap, HPA, RBAC
# and the like have none). A Service waits for its selected pods (service.go checkAndLogStatus).
AWAITED_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "Pod")
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io",
                  "apiextensions.k8s.io", "admissionregistration.k8s.io", "storage.k8s.io",
                  "coordination.k8s.io", "discovery.k8s.io", "scheduling.k8s.io", "node.k8s.io",
                  "certificates.k8s.io", "events.k8s.io", "flowcontrol.apiserver.k8s.io",
                  "apiregistration.k8s.io"}
# Charts that install a CRD group (their crds/ directories, or templates/crds for kedacore's charts), by
# chart name as recorded on helm v4 Charts.
CHART_CRDS = {"kube-prometheus-stack": {"monitoring.coreos.com"},
              # kedacore/charts keda 2.20.2 templates/crds (crds.install true), keda-add-ons-http 0.15.0 the same.
              "keda": {"keda.sh", "eventing.keda.sh"},
              "keda-add-ons-http": {"http.keda.sh"},
              # aws/karpenter-provider-aws charts/karpenter 1.14.1 crds/ (helm v4 renders crds/ unless skipCrds);
              # an OCI chart is recorded by its full reference (components/helm_charts.py chart()).
              "oci://public.ecr.aws/karpenter/karpenter": {"karpenter.sh", "karpenter.k8s.aws",
                                                           "autoscaling.x-k8s.io"}}
# Services a chart renders, by chart name (kedacore/charts keda-add-ons-http 0.15.0 templates/interceptor
# service-proxy.yaml and templates/scaler/service.yaml, with the chart's default service names).
CHART_SERVICES = {"keda-add-ons-http": {"keda-add-ons-http-interceptor-proxy", "keda-add-ons-http-external-scaler"}}
CPU_MEMORY = ("cpu", "memory")
COMPUTE_CLASS_SINCE = (1, 30, 3)
"""GKE installs the ComputeClass CRD (cloud.google.com/v1) from 1.30.3-gke.1451000 (GKE docs, "About
custom compute classes", requirements); a cluster whose minimum version is older may not have it."""


def _version(text: object) -> tuple[int, ...]:
    """``1.33`` / ``1.30.3-gke.1451000`` -> (1, 33) / (1, 30, 3); () when absent or unreadable."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", str(text or ""))
    return tuple(int(g) for g in match.groups() if g is not None) if match else ()


@dataclass(frozen=True)
class Violation:
    rule: str
    urn: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.urn.split('::')[-1]} ({self.urn.split('::')[-2].split('$')[-1]}): {self.message}"


@dataclass(frozen=True)
class Context:
    """What the rules need besides the recording: the stack's declared cluster prerequisites."""

    prerequisites: frozenset[str] = frozenset()
    await_serving: str = "auto"


class Plan:
    """The recording with the graph walks the rules share."""

    def __init__(self, recording: Recording):
        self.recording = recording
        self.by_urn = {r.urn: r for r in recording.resources}
        self.children: dict[str, list[RecordedResource]] = {}
        for r in recording.resources:
            self.children.setdefault(r.parent, []).append(r)
        self._closure: dict[str, frozenset[str]] = {}

    def _provider(self, r: RecordedResource) -> RecordedResource | None:
        # Provider references are "<urn>::<id>"; the URN itself contains "::".
        if not r.provider:
            return None
        return self.by_urn.get(r.provider.rsplit("::", 1)[0])

    def _descendants(self, urn: str) -> Iterable[str]:
        for child in self.children.get(urn, []):
            yield child.urn
            yield from self._descendants(child.urn)

    def closure(self, r: RecordedResource) -> frozenset[str]:
        """Every resource that must exist before ``r`` is created: its dependencies (a component
        stands for all its descendants), its provider's, transitively."""
        if r.urn in self._closure:
            return self._closure[r.urn]
        self._closure[r.urn] = frozenset()  # cycles cannot occur in a valid plan; guard anyway
        seen: set[str] = set()
        direct = list(r.dependencies)
        provider = self._provider(r)
        if provider is not None:
            direct.append(provider.urn)
        for urn in direct:
            for u in (urn, *self._descendants(urn)):
                dep = self.by_urn.get(u)
                if dep is None or u in seen:
                    continue
                seen.add(u)
                seen |= self.closure(dep)
        self._closure[r.urn] = frozenset(seen)
        return self._closure[r.urn]

    def closure_types(self, r: RecordedResource) -> list[RecordedResource]:
        return [self.by_urn[u] for u in self.closure(r)]

    def k8s(self, kind: str | None = None) -> list[RecordedResource]:
        return [r for r in self.recording.resources if r.type.startswith("kubernetes:") and r.custom
                and "kind" in r.inputs and (kind is None or r.inputs["kind"] == kind)]


def _annotations(r: RecordedResource) -> dict[str, str]:
    return ((r.inputs.get("metadata") or {}).get("annotations")) or {}


def _awaited(r: RecordedResource) -> bool:
    return _annotations(r).get(SKIP_AWAIT) != "true"


def _group(r: RecordedResource) -> str:
    api = r.inputs.get("apiVersion", "")
    return api.split("/")[0] if "/" in api else ""


# --- rules ---------------------------------------------------------------------------------------

def crd_installed_first(plan: Plan, ctx: Context) -> list[Violation]:
    """An object of a custom kind needs its CRD applied before it, by a resource it depends on, or a
    prerequisite the stack declares; otherwise the API server answers "no matches for kind"."""
    out = []
    for r in plan.k8s():
        group = _group(r)
        if group in BUILTIN_GROUPS or r.inputs.get("kind") == "CustomResourceDefinition":
            continue
        installers = []
        for dep in plan.closure_types(r):
            if dep.type == "kubernetes:helm.sh/v4:Chart" and group in CHART_CRDS.get(dep.inputs.get("chart"), ()):
                installers.append(dep)
            elif (dep.type == "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"
                  and (dep.inputs.get("spec") or {}).get("group") == group):
                installers.append(dep)
            elif (dep.type == "gcp:container/cluster:Cluster" and group == "gateway.networking.k8s.io"
                  and (dep.inputs.get("gatewayApiConfig") or {}).get("channel") not in (None, "CHANNEL_DISABLED")):
                installers.append(dep)
            elif (dep.type == "gcp:container/cluster:Cluster" and group == "cloud.google.com"
                  and r.inputs.get("kind") == "ComputeClass"
                  and _version(dep.inputs.get("minMasterVersion")) >= COMPUTE_CLASS_SINCE):
                installers.append(dep)
        declared = {"gateway.networking.k8s.io": "gateway-api-crds", "networking.istio.io": "istio",
                    "security.istio.io": "istio", "gateway.envoyproxy.io": "envoy-gateway",
                    "monitoring.coreos.com": "prometheus-operator"}.get(group)
        if not installers and declared not in ctx.prerequisites:
            out.append(Violation("crd-installed-first", r.urn,
                                 f"kind {r.inputs['kind']} ({group}) has no CRD installed before it: depend on the "
                                 f"resource that installs it{f' or declare {declared!r} in clusterPrerequisites' if declared else ''}"))
        parents = (r.inputs.get("spec") or {}).get("parentRefs") or []
        if r.inputs.get("kind") == "HTTPRoute" and any(p.get("kind") == "Service" for p in parents) \
                and "gamma-mesh" not in ctx.prerequisites:
            out.append(Violation("crd-installed-first", r.urn,
                                 "an HTTPRoute whose parent is a Service acts only in a mesh implementing GAMMA "
                                 "(GEP-1426): declare 'gamma-mesh' in clusterPrerequisites or use trafficRouter proxy"))
    return out


def identity_after_issuer(plan: Plan, ctx: Context) -> list[Violation]:
    """A cloud identity binding needs its issuer to exist first: a Workload Identity member needs a
    cluster with that workload pool (the pool appears with the first such cluster,
    terraform-google-kubernetes-engine#916); an IRSA trust needs the OIDC provider; the EKS
    Kubernetes provider needs the deployer's access policy (authentication mode API, no bootstrap admin)."""
    out = []
    for r in plan.recording.resources:
        deps = plan.closure_types(r)
        member = str(r.inputs.get("member", ""))
        pool = re.search(r"serviceAccount:([^\[]+\.svc\.id\.goog)\[", member)
        if pool and not any(d.type == "gcp:container/cluster:Cluster"
                            and (d.inputs.get("workloadIdentityConfig") or {}).get("workloadPool") == pool.group(1)
                            for d in deps):
            out.append(Violation("identity-after-issuer", r.urn,
                                 f"binds {pool.group(1)} but does not depend on a cluster with that workload "
                                 "pool: in a project without one the call fails (Identity Pool does not exist)"))
        if r.type == "aws:iam/role:Role" and "oidc-provider/" in str(r.inputs.get("assumeRolePolicy", "")) \
                and not any(d.type == "aws:iam/openIdConnectProvider:OpenIdConnectProvider" for d in deps):
            out.append(Violation("identity-after-issuer", r.urn,
                                 "trusts an OIDC provider it does not depend on"))
        if r.type == "pulumi:providers:kubernetes" and any(d.type == "aws:eks/cluster:Cluster" for d in deps):
            if not any(d.type == "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
                       and str(d.inputs.get("principalArn", "")).endswith(f":role/{DEPLOY_ROLE}")
                       for d in deps):
                out.append(Violation("identity-after-issuer", r.urn,
                                     "applies Kubernetes objects before the deploying identity has an EKS access "
                                     "policy: every call would be Unauthorized"))
    return out


def _needs_run_data(plan: Plan, r: RecordedResource) -> RecordedResource | None:
    """The bucket created in this run that a workload's pods read (and wait for) before they are ready."""
    return next((d for d in plan.closure_types(r) if d.type in BUCKET_TYPES), None)


def _pod_labels(r: RecordedResource) -> dict[str, str]:
    return (((r.inputs.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def first_up_completes(plan: Plan, ctx: Context) -> list[Violation]:
    """On a stack's first ``pulumi up`` nothing Pulumi awaits may need what exists only after the run:
    a workload whose pods wait for models in a bucket created by this very run never becomes ready, so
    its await (and that of a Service selecting its pods) fails the update after its timeout."""
    if not plan.recording.first_up:
        return []
    out = []
    blocked = {}
    for r in plan.k8s():
        if r.inputs["kind"] in AWAITED_WORKLOADS:
            if (r.inputs.get("spec") or {}).get("replicas") == 0:
                continue  # created at zero pods (KEDA scales it later): its rollout is complete at once
            bucket = _needs_run_data(plan, r)
            if bucket is not None:
                blocked[r.urn] = (r, bucket)
                if _awaited(r):
                    out.append(Violation("first-up-completes", r.urn,
                                         f"awaited, but its pods wait for data in {bucket.name}, created in the same "
                                         f"run (empty until models are published): skip the await on the first up"))
    for svc in plan.k8s("Service"):
        selector = (svc.inputs.get("spec") or {}).get("selector") or {}
        if not selector or not _awaited(svc):
            continue
        ns = (svc.inputs.get("metadata") or {}).get("namespace")
        for workload, bucket in blocked.values():
            same_ns = (workload.inputs.get("metadata") or {}).get("namespace") == ns
            if same_ns and selector.items() <= _pod_labels(workload).items():
                out.append(Violation("first-up-completes", svc.urn,
                                     f"awaited until its selected pods are ready, but it selects {workload.name}, "
                                     f"whose pods wait for data in {bucket.name} created in the same run"))
    return out


def later_ups_await(plan: Plan, ctx: Context) -> list[Violation]:
    """After the first up every rollout is awaited, so a broken one fails ``pulumi up`` loudly (except the
    Services of a server that may sleep at zero pods: :func:`no_await_while_asleep`)."""
    if plan.recording.first_up or ctx.await_serving == "never":
        return []
    asleep = {svc.urn for svc in _sleeping_services(plan)}
    return [Violation("later-ups-await", r.urn, f"skips the await on a later up: a broken rollout would pass silently")
            for r in plan.k8s() if r.inputs["kind"] in (*AWAITED_WORKLOADS, "Service") and not _awaited(r)
            and r.urn not in asleep]


def _meta(r: RecordedResource) -> dict:
    return r.inputs.get("metadata") or {}


def _scaled_objects(plan: Plan) -> list[RecordedResource]:
    return [r for r in plan.k8s("ScaledObject") if _group(r) == "keda.sh"]


def _target(plan: Plan, scaled: RecordedResource) -> RecordedResource | None:
    ref = (scaled.inputs.get("spec") or {}).get("scaleTargetRef") or {}
    ns = _meta(scaled).get("namespace")
    return next((d for d in plan.k8s(ref.get("kind") or "Deployment")
                 if _meta(d).get("name") == ref.get("name") and _meta(d).get("namespace") == ns), None)


def _sleeping_services(plan: Plan) -> list[RecordedResource]:
    """Services whose selector matches only pods of workloads a ScaledObject may scale to zero."""
    sleepers, awake = [], []
    scaled_to_zero = {}
    for so in _scaled_objects(plan):
        target = _target(plan, so)
        if target is not None and (so.inputs.get("spec") or {}).get("minReplicaCount", 1) == 0:
            scaled_to_zero[target.urn] = target
    for w in plan.k8s():
        if w.inputs["kind"] in AWAITED_WORKLOADS and w.inputs["kind"] != "Pod":
            (sleepers if w.urn in scaled_to_zero else awake).append(w)
    out = []
    for svc in plan.k8s("Service"):
        selector = (svc.inputs.get("spec") or {}).get("selector") or {}
        ns = _meta(svc).get("namespace")
        matches = lambda w: bool(selector) and _meta(w).get("namespace") == ns and selector.items() <= _pod_labels(w).items()  # noqa: E731
        if any(matches(w) for w in sleepers) and not any(matches(w) for w in awake):
            out.append(svc)
    return out


def no_await_while_asleep(plan: Plan, ctx: Context) -> list[Violation]:
    """pulumi-kubernetes waits for a Service with a selector until a selected pod is ready
    (provider/pkg/await/service.go ``checkAndLogStatus``). A Service selecting only pods of a Deployment
    that KEDA may keep at zero pods would fail every ``pulumi up`` that creates or changes it while the
    server sleeps: it must skip the await (the Deployment itself completes a rollout at zero replicas)."""
    return [Violation("no-await-while-asleep", svc.urn,
                      "selects only pods a ScaledObject may scale to zero, but is awaited: an up while the server "
                      "sleeps waits for endpoints that never come (annotate pulumi.com/skipAwait)")
            for svc in _sleeping_services(plan) if _awaited(svc)]


def scaled_object_prerequisites(plan: Plan, ctx: Context) -> list[Violation]:
    """A ScaledObject is created after what KEDA reads when it admits and first reconciles it: its target
    when it has a cpu/memory trigger (kedacore/keda apis/keda/v1alpha1/scaledobject_webhook.go
    ``verifyCPUMemoryScalers`` gets the Deployment and refuses the object if it cannot), and each
    InterceptorRoute an ``external-push`` trigger names (keda.sh/http-add-on/0.15 autoscale-an-app: before
    the route exists the add-on's scaler returns no metric spec and KEDA falls back to a CPU metric)."""
    out = []
    routes = {(_meta(r).get("namespace"), _meta(r).get("name")): r for r in plan.k8s("InterceptorRoute")}
    for so in _scaled_objects(plan):
        closure = plan.closure(so)
        spec = so.inputs.get("spec") or {}
        ns = _meta(so).get("namespace")
        triggers = spec.get("triggers") or []
        if any(t.get("type") in CPU_MEMORY for t in triggers):
            target = _target(plan, so)
            if target is None or target.urn not in closure:
                out.append(Violation("scaledobject-prerequisites", so.urn,
                                     f"has a cpu/memory trigger but does not depend on its target "
                                     f"{(spec.get('scaleTargetRef') or {}).get('name')}: KEDA's webhook refuses it "
                                     "while the Deployment does not exist"))
        for t in triggers:
            name = (t.get("metadata") or {}).get("interceptorRoute")
            if t.get("type") != "external-push" or not name:
                continue
            route = routes.get((ns, name))
            if route is None or route.urn not in closure:
                out.append(Violation("scaledobject-prerequisites", so.urn,
                                     f"names InterceptorRoute {name} in an external-push trigger but "
                                     f"{'it is not in the plan' if route is None else 'does not depend on it'}: "
                                     "created first, KEDA falls back to a CPU metric"))
    return out


def one_autoscaler_per_workload(plan: Plan, ctx: Context) -> list[Violation]:
    """A workload is scaled by one autoscaler: a HorizontalPodAutoscaler of the plan and a ScaledObject (KEDA
    makes an HPA of its own) on one Deployment fight over its replicas, and KEDA's webhook refuses the
    ScaledObject (scaledobject_webhook.go ``verifyHpas``: "already managed by the hpa")."""
    hpas: dict[tuple, RecordedResource] = {}
    for hpa in plan.k8s("HorizontalPodAutoscaler"):
        ref = (hpa.inputs.get("spec") or {}).get("scaleTargetRef") or {}
        hpas[(_meta(hpa).get("namespace"), ref.get("kind"), ref.get("name"))] = hpa
    out = []
    seen: dict[tuple, RecordedResource] = {}
    for so in _scaled_objects(plan):
        ref = (so.inputs.get("spec") or {}).get("scaleTargetRef") or {}
        key = (_meta(so).get("namespace"), ref.get("kind") or "Deployment", ref.get("name"))
        if key in hpas:
            out.append(Violation("one-autoscaler-per-workload", so.urn,
                                 f"scales {key[1]} {key[2]}, which HorizontalPodAutoscaler "
                                 f"{_meta(hpas[key]).get('name')} scales too"))
        if key in seen:
            out.append(Violation("one-autoscaler-per-workload", so.urn,
                                 f"scales {key[1]} {key[2]}, which ScaledObject {_meta(seen[key]).get('name')} "
                                 "scales too"))
        seen[key] = so
    return out


def router_after_backends(plan: Plan, ctx: Context) -> list[Violation]:
    """nginx resolves ``proxy_pass``/``grpc_pass``/``server`` host names once, at start, and exits with
    "host not found in upstream" when one does not resolve (ngx_http_upstream_server, ngx_parse_url):
    a router Deployment must come after the Services it names."""
    out = []
    services = {(s.inputs["metadata"]["name"], s.inputs["metadata"].get("namespace")): s for s in plan.k8s("Service")}
    configs = {c.inputs["metadata"]["name"]: c for c in plan.k8s("ConfigMap")}
    for dep in plan.k8s("Deployment"):
        volumes = (((dep.inputs.get("spec") or {}).get("template") or {}).get("spec") or {}).get("volumes") or []
        for volume in volumes:
            cm = configs.get((volume.get("configMap") or {}).get("name"))
            text = (cm.inputs.get("data") or {}).get("nginx.conf") if cm else None
            if not text:
                continue
            closure = plan.closure(dep)
            charts = [c for c in plan.closure_types(dep) if c.type == "kubernetes:helm.sh/v4:Chart"]
            for host, ns in sorted(set(re.findall(r"\b([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local", text))):
                if any(host in CHART_SERVICES.get(c.inputs.get("chart"), ()) and c.inputs.get("namespace") == ns
                       for c in charts):
                    continue  # a Service the chart renders, and the chart is applied (and awaited) first
                svc = services.get((host, ns))
                if svc is None or svc.urn not in closure:
                    out.append(Violation("router-after-backends", dep.urn,
                                         f"nginx resolves {host}.{ns} at start, but the Service "
                                         f"{'is not in the plan' if svc is None else 'is not a dependency'}"))
    return out


def private_api_reachable(plan: Plan, ctx: Context) -> list[Violation]:
    """A control plane with no public endpoint must admit the deployer from somewhere: EKS's cluster
    security group admits only nodes and the control plane; a private GKE endpoint only authorized
    networks. Otherwise every Kubernetes call of ``pulumi up`` times out."""
    out = []
    for c in plan.recording.of_type("aws:eks/cluster:Cluster"):
        if (c.inputs.get("vpcConfig") or {}).get("endpointPublicAccess", True):
            continue
        rules = [r for r in plan.recording.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
                 if r.inputs.get("fromPort", 0) <= 443 <= r.inputs.get("toPort", -1)]
        providers = [p for p in plan.recording.of_type("pulumi:providers:kubernetes") if c.urn in plan.closure(p)]
        if not rules or any(not any(r.urn in plan.closure(p) for r in rules) for p in providers):
            out.append(Violation("private-api-reachable", c.urn,
                                 "private-only endpoint without a 443 ingress rule on the cluster security group "
                                 "that the Kubernetes provider waits for: set apiAccessCidrs"))
    for c in plan.recording.of_type("gcp:container/cluster:Cluster"):
        private = (c.inputs.get("privateClusterConfig") or {}).get("enablePrivateEndpoint")
        blocks = ((c.inputs.get("masterAuthorizedNetworksConfig") or {}).get("cidrBlocks")) or []
        if private and not blocks:
            out.append(Violation("private-api-reachable", c.urn,
                                 "private endpoint with no authorized network: set apiAccessCidrs"))
    return out


def pod_identity_before_pods(plan: Plan, ctx: Context) -> list[Violation]:
    """A workload whose service account gets AWS credentials from an EKS Pod Identity association must be
    created after the association: EKS's pod identity webhook adds the credentials to a pod when the pod is
    admitted, so pods started before the association exists run without them (until restarted) and a
    controller such as Karpenter crash-loops on its first AWS call."""
    associations = {(r.inputs.get("namespace"), r.inputs.get("serviceAccount")): r
                    for r in plan.recording.resources if r.type == "aws:eks/podIdentityAssociation:PodIdentityAssociation"}
    out = []
    for r in plan.recording.resources:
        if r.type == "kubernetes:helm.sh/v4:Chart":
            account = (((r.inputs.get("values") or {}).get("serviceAccount") or {}).get("name"))
            namespace = r.inputs.get("namespace")
        elif r.type.startswith("kubernetes:apps/v1:") and r.inputs.get("kind") in ("Deployment", "DaemonSet",
                                                                                   "StatefulSet"):
            account = ((((r.inputs.get("spec") or {}).get("template") or {}).get("spec") or {})
                       .get("serviceAccountName"))
            namespace = (r.inputs.get("metadata") or {}).get("namespace")
        else:
            continue
        association = associations.get((namespace, account))
        if association is not None and association.urn not in plan.closure(r):
            out.append(Violation("pod-identity-before-pods", r.urn,
                                 f"runs as {namespace}/{account}, whose Pod Identity association "
                                 f"{association.name} it does not depend on: its first pods would start "
                                 "without AWS credentials"))
    return out


@dataclass(frozen=True)
class Rule:
    id: str
    check: Callable[[Plan, Context], list[Violation]]
    source: str


RULES = (
    Rule("crd-installed-first", crd_installed_first,
         "Kubernetes API discovery (\"no matches for kind\"); Gateway API GEP-1426 (GAMMA); "
         "GKE gateway_api_config installs the CRDs"),
    Rule("identity-after-issuer", identity_after_issuer,
         "terraform-google-kubernetes-engine#916; AWS IAM OIDC trust; terraform-aws-eks access entries "
         "(authentication_mode API)"),
    Rule("first-up-completes", first_up_completes,
         "pulumi-kubernetes provider/pkg/await/awaiters.go, deployment.go, service.go (checkAndLogStatus)"),
    Rule("later-ups-await", later_ups_await, "pulumi-kubernetes provider/pkg/metadata/annotations.go (skipAwait)"),
    Rule("router-after-backends", router_after_backends,
         "nginx src/http/ngx_http_upstream.c: upstream host names resolve at configuration load"),
    Rule("private-api-reachable", private_api_reachable,
         "EKS cluster security group (docs.aws.amazon.com/eks/latest/userguide/sec-group-reqs.html); "
         "GKE private endpoint + master authorized networks"),
    Rule("scaledobject-prerequisites", scaled_object_prerequisites,
         "kedacore/keda apis/keda/v1alpha1/scaledobject_webhook.go verifyCPUMemoryScalers; "
         "keda.sh/http-add-on/0.15 user-guide/autoscale-an-app (ScaledObject after the InterceptorRoute)"),
    Rule("one-autoscaler-per-workload", one_autoscaler_per_workload,
         "kedacore/keda apis/keda/v1alpha1/scaledobject_webhook.go verifyHpas, verifyScaledObjects"),
    Rule("pod-identity-before-pods", pod_identity_before_pods,
         "EKS user guide, pod-id-how-it-works (the EKS Pod Identity webhook mutates pods at admission); "
         "aws/amazon-eks-pod-identity-webhook README"),
    Rule("no-await-while-asleep", no_await_while_asleep,
         "pulumi-kubernetes provider/pkg/await/service.go (checkAndLogStatus waits for ready endpoints)"),
)


def context_of(recording: Recording) -> Context:
    from stacks.config import parse_settings

    settings = parse_settings(recording.config)
    prereqs = set(settings.cluster_prerequisites)
    if not settings.monitoring.install:
        prereqs.add("prometheus-operator")  # documented: an existing Prometheus picks the objects up
    return Context(prerequisites=frozenset(prereqs), await_serving=settings.await_serving)


def check(recording: Recording, ctx: Context | None = None, rules: Iterable[Rule] = RULES) -> list[Violation]:
    """Every violation of every rule in the recorded plan."""
    plan = Plan(recording)
    ctx = ctx if ctx is not None else context_of(recording)
    return [v for rule in rules for v in rule.check(plan, ctx)]


def format_violations(violations: list[Violation]) -> str:
    return "\n".join(f"  - {v}" for v in violations)


def as_json(violations: list[Violation]) -> list[dict[str, Any]]:
    return [{"rule": v.rule, "urn": v.urn, "message": v.message} for v in violations]


__all__ = ["RULES", "Context", "Plan", "Rule", "Violation", "check", "context_of", "format_violations", "as_json"]
