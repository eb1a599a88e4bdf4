"""Deploy-semantics rules (stacks/deploy_rules.py): the shipped stacks pass every rule, on their first
``pulumi up`` and on later ones, and each rule fails when its behaviour is broken on purpose."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from stacks import deploy_rules
from stacks.deploy_rules import Context, check
from stacks.mock_engine import Recording
from stacks.plan import DEPLOYED_OUTPUTS, ROOT, plan_stack
from tests.conftest import stack_file_with
from tests.test_serving import always_on

STACKS = ["dev", "prod", "gke-dev"]


def rules_of(violations) -> set[tuple[str, str]]:
    return {(v.rule, v.urn.split("::")[-1]) for v in violations}


@pytest.fixture(scope="module")
def later() -> dict[str, Recording]:
    return {s: plan_stack(s, previous_outputs=DEPLOYED_OUTPUTS) for s in STACKS}


@pytest.mark.parametrize("stack", STACKS)
def test_shipped_stacks_pass_every_rule_on_the_first_up(stack, dev, prod, gke):
    recording = {"dev": dev, "prod": prod, "gke-dev": gke}[stack]
    assert recording.first_up
    assert check(recording) == []


@pytest.mark.parametrize("stack", STACKS)
def test_shipped_stacks_pass_every_rule_on_a_later_up(stack, later):
    assert not later[stack].first_up
    assert check(later[stack]) == []


def test_every_rule_has_a_source_and_a_docstring():
    assert len({r.id for r in deploy_rules.RULES}) == len(deploy_rules.RULES) >= 6
    for rule in deploy_rules.RULES:
        assert rule.source and rule.check.__doc__, rule.id


def mutated(recording: Recording) -> Recording:
    return copy.deepcopy(recording)


def resource(recording: Recording, type_: str, name: str):
    return recording.one(type_, name)


# --- first-up-completes / later-ups-await -----------------------------------------------------

def test_awaiting_serving_on_the_first_up_is_a_violation(plan_with):
    # awaitServing always: the Deployments wait for models in the bucket this very run creates.
    violations = check(plan_with(awaitServing="always", servers=always_on()))
    found = rules_of(violations)
    for name in ("tfserving-default-deployment", "tfserving-cpu-deployment", "tfserving-default-canary-deployment"):
        assert ("first-up-completes", name) in found, sorted(found)
    # The Services selecting those pods hang the same way (pulumi-kubernetes service.go): the stable and
    # canary Services; the client Service selects the router, whose pods need no models.
    assert ("first-up-completes", "tfserving-default-service") in found
    assert ("first-up-completes", "tfserving-default-canary-service") in found
    assert ("first-up-completes", "tfserving-default-client") not in found
    message = next(v.message for v in violations if v.urn.endswith("tfserving-cpu-deployment"))
    assert "data in models," in message and "same run" in message


def test_a_server_created_at_zero_pods_completes_its_first_up(plan_with):
    # dev as shipped: the GPU server scales to zero, so its Deployments start at 0 replicas (nothing to
    # await) and its Services are never awaited; only the always-on CPU server hangs with awaitServing always.
    found = rules_of(check(plan_with(awaitServing="always")))
    assert ("first-up-completes", "tfserving-cpu-deployment") in found
    assert not {name for rule, name in found if rule == "first-up-completes" and name.startswith("tfserving-default")}


def test_the_client_service_is_judged_by_what_it_selects(plan_with):
    # Without a canary the client Service selects the stable pods, so it is blocked too.
    rec = plan_with(awaitServing="always", servers={"cpu": {"nodePool": "system", "gpus": 0,
                                                            "models": {"digits-cpu": {}}}})
    assert ("first-up-completes", "tfserving-cpu-client") in rules_of(check(rec))


def test_skipping_the_await_after_the_first_up_is_a_violation(dev):
    rec = mutated(dev)  # the first-up plan carries skipAwait; read as a later up it must not
    rec.previous_outputs = dict(DEPLOYED_OUTPUTS)
    found = rules_of(check(rec))
    assert ("later-ups-await", "tfserving-default-deployment") in found
    assert ("later-ups-await", "tfserving-default-client") in found


def test_later_ups_await_every_serving_rollout(later):
    # All but the Services of dev's sleeping server (no-await-while-asleep): nothing selected to wait for.
    asleep = {"dev": {"tfserving-default-service", "tfserving-default-canary-service", "tfserving-default-hold",
                      "tfserving-default-canary-hold"}}
    for stack, rec in later.items():
        skipped = {r.name for r in rec.resources if r.inputs.get("kind") in ("Deployment", "Service")
                   and deploy_rules.SKIP_AWAIT in ((r.inputs["metadata"].get("annotations")) or {})}
        assert skipped == asleep.get(stack, set()), stack


def test_await_never_is_an_explicit_opt_out(plan_with):
    rec = plan_with(awaitServing="never")
    rec.previous_outputs = dict(DEPLOYED_OUTPUTS)
    assert not [v for v in check(rec) if v.rule == "later-ups-await"]


# --- crd-installed-first ----------------------------------------------------------------------

def test_a_mesh_route_on_eks_without_its_crds_is_a_violation(plan_with):
    # Mesh routers cannot hold requests: dev's GPU server always on.
    rec = plan_with(trafficRouter="gateway-api", clusterPrerequisites=["gamma-mesh"], servers=always_on())
    found = rules_of(check(rec))
    assert ("crd-installed-first", "tfserving-default-canary-route") in found
    rec = plan_with(trafficRouter="gateway-api", clusterPrerequisites=["gamma-mesh", "gateway-api-crds"],
                    servers=always_on())
    assert not [v for v in check(rec) if v.rule == "crd-installed-first"]


def test_a_gamma_route_without_a_mesh_is_a_violation(plan_with):
    rec = plan_with(trafficRouter="gateway-api", clusterPrerequisites=["gamma-mesh", "gateway-api-crds"],
                    servers=always_on())
    ctx = Context(prerequisites=frozenset({"gateway-api-crds"}))  # the mesh left out
    assert ("crd-installed-first", "tfserving-default-canary-route") in rules_of(check(rec, ctx))


def test_a_service_monitor_not_after_the_prometheus_chart_is_a_violation(dev):
    rec = mutated(dev)
    monitors = [r for r in rec.resources if r.inputs.get("kind") == "ServiceMonitor"]
    assert monitors
    monitors[0].dependencies = []
    assert ("crd-installed-first", monitors[0].name) in rules_of(check(rec))


def test_an_existing_prometheus_is_a_declared_prerequisite(plan_with):
    rec = plan_with(monitoring={"install": False})
    assert [r for r in rec.resources if r.inputs.get("kind") == "ServiceMonitor"]
    assert check(rec) == []


def test_gke_installs_the_gateway_api_crds_itself(gke, plan_with):
    rec = plan_with("gke-dev", trafficRouter="gateway-api", clusterPrerequisites=["gamma-mesh"])
    assert not [v for v in check(rec) if v.rule == "crd-installed-first"]
    broken = mutated(rec)
    cluster = broken.one("gcp:container/cluster:Cluster", "gke-cluster")
    cluster.inputs["gatewayApiConfig"] = {"channel": "CHANNEL_DISABLED"}
    assert ("crd-installed-first", "tfserving-default-canary-route") in rules_of(check(broken))


def drop_dependencies(rec: Recording, type_: str, name: str, *fragments: str) -> None:
    """Remove from a resource's dependencies every URN containing one of ``fragments``."""
    r = rec.one(type_, name)
    r.dependencies = [u for u in r.dependencies if not any(f in u for f in fragments)]


SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
ROUTE = "kubernetes:http.keda.sh/v1beta1:InterceptorRoute"


def test_keda_objects_before_keda_charts_are_violations(dev):
    # The ScaledObject's CRD comes with the keda chart, the InterceptorRoute's with the add-on's.
    rec = mutated(dev)
    drop_dependencies(rec, SCALED_OBJECT, "tfserving-default-scaledobject", "Chart::keda")
    drop_dependencies(rec, ROUTE, "tfserving-default-rest-route", "Chart::keda")
    # (the route's dependencies reach the charts through nothing else; the ScaledObject's through the routes)
    drop_dependencies(rec, SCALED_OBJECT, "tfserving-default-scaledobject", "InterceptorRoute")
    found = rules_of(check(rec))
    assert ("crd-installed-first", "tfserving-default-scaledobject") in found
    assert ("crd-installed-first", "tfserving-default-rest-route") in found
    assert ("crd-installed-first", "tfserving-default-grpc-route") not in found


# --- scaledobject-prerequisites / one-autoscaler-per-workload / no-await-while-asleep -------------

def test_a_scaled_object_before_its_route_or_target_is_a_violation(dev):
    rec = mutated(dev)
    drop_dependencies(rec, SCALED_OBJECT, "tfserving-default-scaledobject", "InterceptorRoute::tfserving-default-grpc")
    violations = [v for v in check(rec) if v.rule == "scaledobject-prerequisites"]
    assert [v.message.split(" in ")[0] for v in violations] == ["names InterceptorRoute tfserving-default-grpc"]
    rec = mutated(dev)
    drop_dependencies(rec, SCALED_OBJECT, "tfserving-default-scaledobject", "Deployment::tfserving-default-deployment")
    found = rules_of(check(rec))
    assert ("scaledobject-prerequisites", "tfserving-default-scaledobject") in found
    # The canary's ScaledObject has no cpu trigger: it need not wait for its Deployment.
    rec = mutated(dev)
    drop_dependencies(rec, SCALED_OBJECT, "tfserving-default-canary-scaledobject", "Deployment::")
    assert not [v for v in check(rec) if v.rule == "scaledobject-prerequisites"]


def test_an_hpa_and_a_scaled_object_on_one_deployment_is_a_violation(dev, prod):
    rec = mutated(dev)
    hpa = copy.deepcopy(prod.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "tfserving-default-hpa"))
    rec.resources.append(hpa)
    assert ("one-autoscaler-per-workload", "tfserving-default-scaledobject") in rules_of(check(rec))
    rec = mutated(dev)
    twin = copy.deepcopy(rec.one(SCALED_OBJECT, "tfserving-default-canary-scaledobject"))
    twin.urn += "-twin"
    twin.inputs["spec"]["scaleTargetRef"]["name"] = "tfserving-default"
    rec.resources.append(twin)
    violations = [v for v in check(rec) if v.rule == "one-autoscaler-per-workload"]
    assert len(violations) == 1 and "ScaledObject tfserving-default scales too" in violations[0].message


def test_an_awaited_service_of_a_sleeping_server_is_a_violation(later):
    later, dev_later = mutated(later["dev"]), later["dev"]
    assert check(later) == []
    hold = later.one("kubernetes:core/v1:Service", "tfserving-default-hold")
    hold.inputs["metadata"]["annotations"] = {}
    found = rules_of(check(later))
    assert ("no-await-while-asleep", "tfserving-default-hold") in found
    # It is the only one: later-ups-await exempts the sleeping server's Services that do skip.
    assert {v for v in found if v[0] in ("no-await-while-asleep", "later-ups-await")} == {
        ("no-await-while-asleep", "tfserving-default-hold")}
    # A server that is always on again (its ScaledObject gone) must be awaited once more.
    awake = mutated(dev_later)
    awake.resources = [r for r in awake.resources if r.type != SCALED_OBJECT]
    assert ("later-ups-await", "tfserving-default-hold") in rules_of(check(awake))


# --- identity-after-issuer --------------------------------------------------------------------

def test_workload_identity_binding_waits_for_the_cluster(gke):
    binding = gke.one("gcp:serviceaccount/iAMMember:IAMMember", "model-reader-workload-identity")
    assert gke.one("gcp:container/cluster:Cluster", "gke-cluster").urn in binding.dependencies
    rec = mutated(gke)
    rec.one("gcp:serviceaccount/iAMMember:IAMMember", "model-reader-workload-identity").dependencies = [
        u for u in binding.dependencies if "container/cluster" not in u]
    assert ("identity-after-issuer", "model-reader-workload-identity") in rules_of(check(rec))


def test_irsa_role_waits_for_the_oidc_provider(dev):
    rec = mutated(dev)
    role = rec.one("aws:iam/role:Role", "model-reader-role")
    role.dependencies = [u for u in role.dependencies if "openIdConnectProvider" not in u
                         and "EksCluster" not in u]
    assert ("identity-after-issuer", "model-reader-role") in rules_of(check(rec))


def test_kubernetes_provider_waits_for_the_deployers_access(dev):
    rec = mutated(dev)
    provider = rec.one("pulumi:providers:kubernetes", "eks-k8s")
    provider.dependencies = [u for u in provider.dependencies if "accessPolicyAssociation" not in u]
    assert ("identity-after-issuer", "eks-k8s") in rules_of(check(rec))


# --- router-after-backends --------------------------------------------------------------------

def test_router_waits_for_the_services_it_resolves(dev):
    router = dev.one("kubernetes:apps/v1:Deployment", "tfserving-default-router-deployment")
    stable = dev.one("kubernetes:core/v1:Service", "tfserving-default-service")
    assert stable.urn in deploy_rules.Plan(dev).closure(router)
    rec = mutated(dev)
    rec.one("kubernetes:apps/v1:Deployment", "tfserving-default-router-deployment").dependencies = []
    rec.one("tfplatform:serving:CanaryRouter", "tfserving-default-router").dependencies = []
    found = rules_of(check(rec))
    assert ("router-after-backends", "tfserving-default-router-deployment") in found


def test_a_holding_router_waits_for_the_interceptor_chart(dev):
    # The interceptor's Service is the add-on chart's: the router must come after that chart.
    rec = mutated(dev)
    drop_dependencies(rec, "kubernetes:apps/v1:Deployment", "tfserving-default-router-deployment", "keda")
    drop_dependencies(rec, "tfplatform:serving:CanaryRouter", "tfserving-default-router", "keda")
    messages = [v.message for v in check(rec) if v.rule == "router-after-backends"]
    assert messages == ["nginx resolves keda-add-ons-http-interceptor-proxy.keda at start, but the Service is not "
                        "in the plan"]


# --- private-api-reachable --------------------------------------------------------------------

def test_a_private_endpoint_without_an_access_path_is_a_violation(plan_with):
    rec = plan_with("prod", endpointPublicAccess=False, publicAccessCidrs=["0.0.0.0/0"],
                    apiAccessCidrs=["10.20.0.0/16"])
    assert check(rec) == []
    broken = mutated(rec)
    broken.resources = [r for r in broken.resources
                        if r.type != "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"]
    assert ("private-api-reachable", "eks-cluster") in rules_of(check(broken))


def test_a_private_gke_endpoint_without_authorized_networks_is_a_violation(plan_with):
    rec = plan_with("gke-dev", endpointPublicAccess=False, apiAccessCidrs=["10.0.0.0/16"])
    assert not [v for v in check(rec) if v.rule == "private-api-reachable"]
    broken = mutated(rec)
    broken.one("gcp:container/cluster:Cluster", "gke-cluster").inputs["masterAuthorizedNetworksConfig"] = {}
    assert ("private-api-reachable", "gke-cluster") in rules_of(check(broken))


# --- the plan CLI ---------------------------------------------------------------------------------

def test_plan_cli_fails_naming_the_rule_and_resource(tmp_path):
    path = stack_file_with(tmp_path, awaitServing="always")
    run = subprocess.run([sys.executable, "-m", "stacks", "plan", "--stack", "dev", "--config-file", str(path),
                          "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "deploy-rule violation" in run.stderr
    assert "[first-up-completes] tfserving-cpu-deployment" in run.stderr
    assert "Traceback" not in run.stderr


def test_plan_cli_reports_the_rules_it_ran():
    run = subprocess.run([sys.executable, "-m", "stacks", "plan", "--stack", "dev", "--quiet", "--redeploy"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"deploy rules: {len(deploy_rules.RULES)} checked on a later up, no violation" in run.stdout


# --- pod-identity-before-pods -----------------------------------------------------------------

@pytest.fixture(scope="module")
def capacity_eks() -> Recording:
    return plan_stack("capacity-eks", ROOT / "tests" / "stacks" / "Pulumi.capacity-eks.yaml")


def test_the_karpenter_chart_waits_for_its_pod_identity(capacity_eks):
    assert not {v for v in check(capacity_eks) if v.rule == "pod-identity-before-pods"}
    rec = mutated(capacity_eks)
    chart = resource(rec, "kubernetes:helm.sh/v4:Chart", "karpenter-chart")
    association = resource(rec, "aws:eks/podIdentityAssociation:PodIdentityAssociation", "karpenter-controller")
    chart.dependencies = [d for d in chart.dependencies if d != association.urn]
    found = rules_of(check(rec))
    assert ("pod-identity-before-pods", "karpenter-chart") in found, sorted(found)
