"""TF Serving on Kubernetes as the program renders it (mock engine): one test group per concern."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components.serving.metrics_adapter import RPS_METRIC
from components.serving.model_sync import DEFAULT_SYNC_INTERVAL_SECONDS, render_sync_spec
from components.serving.tfserving_config import ServedModel
from stacks.mock_engine import Recording, run_program
from stacks.plan import ROOT, plan_stack
from stacks.stack_files import load_stack_config
from tests.conftest import config_volume_name, k8s_object, k8s_objects, mounted_config, stack_file_with
from tests.crd_validation import validate_custom_resources
from tests.tf_serving_protos import parse_batching

STABLE, CANARY, CPU = "tfserving-default", "tfserving-default-canary", "tfserving-cpu"
PINNED_DIGITS = {"versionPolicy": "specific", "versions": [1]}


def pod_spec(rec: Recording, name: str = STABLE) -> dict:
    return k8s_object(rec, "Deployment", name)["spec"]["template"]["spec"]


def server(rec: Recording, name: str = STABLE) -> dict:
    return next(c for c in pod_spec(rec, name)["containers"] if c["name"] == "tfserving")


def config_file(rec: Recording, name: str, key: str) -> str:
    return mounted_config(rec, name)[key]


def model_config(rec: Recording, name: str = STABLE) -> dict:
    parsed = text_format.Parse(config_file(rec, name, "models.config"), model_server_config_pb2.ModelServerConfig())
    return {c.name: c for c in parsed.model_config_list.config}


def always_on(base: str = "dev") -> dict:
    """A stack file's servers with none scaling to zero (replicas 1, no scaleToZero block)."""
    servers = yaml.safe_load((ROOT / f"Pulumi.{base}.yaml").read_text())["config"]["tfserving-platform:servers"]
    for spec in servers.values():
        if spec.pop("scaleToZero", None) is not None:
            spec["replicas"] = 1
    return servers


# dev's GPU server scales to zero (tests/test_scale_to_zero.py covers it as shipped); the HPA, canary,
# routing and policy behaviour read here is that of an always-on server, so dev is planned with it.
@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Recording:
    path = stack_file_with(tmp_path_factory.mktemp("dev-always-on"), "dev", servers=always_on())
    return plan_stack("dev", path)


@pytest.fixture
def plan_with(tmp_path):
    def run(base: str = "dev", **overrides: object) -> Recording:
        if base == "dev":
            overrides.setdefault("servers", always_on())
        path = stack_file_with(tmp_path, base, **overrides)
        cfg = load_stack_config(ROOT / "Pulumi.yaml", path, base)
        return run_program(ROOT / "__main__.py", base, cfg.project, cfg.config, cfg.secret_keys)

    return run


def dev_servers(**default: object) -> dict:
    """The dev stack's servers with some keys of the `default` server replaced."""
    return {"servers": {
        "default": {"nodePool": "gpu", "gpus": 1, "maxReplicas": 2, "batching": {"enabled": True},
                    "models": {"digits": {**PINNED_DIGITS, "canaryVersion": 2}}, **default},
        "cpu": {"nodePool": "system", "gpus": 0, "cpu": "1", "memory": "2Gi", "models": {"digits-cpu": {}}}}}


# 1. Many models, versions and labels; several deployments -----------------------------------

def test_a_server_serves_several_models_from_the_stack_config(dev: Recording, prod: Recording):
    for rec in (dev, prod):
        configs = model_config(rec)
        assert list(configs) == ["digits", "digits-latest"]
        assert list(configs["digits"].model_version_policy.specific.versions) == [1]
        assert dict(configs["digits"].version_labels) == {"stable": 1}
        assert configs["digits-latest"].model_version_policy.latest.num_versions == 2
        assert configs["digits-latest"].base_path == "/models/digits-latest"


def test_several_deployments_each_with_resources_and_pool(dev: Recording):
    gpu, cpu = server(dev, STABLE), server(dev, CPU)
    assert pod_spec(dev, STABLE)["nodeSelector"] == {"tfplatform.io/node-pool": "gpu"}
    assert pod_spec(dev, CPU)["nodeSelector"] == {"tfplatform.io/node-pool": "system"}
    assert cpu["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert list(model_config(dev, CPU)) == ["digits-cpu"]
    assert {h["metadata"]["name"] for h in k8s_objects(dev, "HorizontalPodAutoscaler")} == {STABLE, CPU}


# 2. Batching ---------------------------------------------------------------------------------

def test_batching_flags_and_file_only_when_enabled(dev: Recording, plan_with):
    args = server(dev)["args"]
    assert "--enable_batching=true" in args
    assert "--batching_parameters_file=/etc/tfserving/batching.config" in args
    off = plan_with(**dev_servers(batching={"enabled": False}))
    assert not any("batching" in a for a in server(off)["args"])
    assert "batching.config" not in mounted_config(off, STABLE)


def test_batching_defaults_follow_the_tuning_guide(dev: Recording):
    gpu = parse_batching(config_file(dev, STABLE, "batching.config"))  # 2 CPUs, 1 GPU
    assert (gpu.num_batch_threads.value, gpu.max_enqueued_batches.value) == (2, 2)
    assert (gpu.batch_timeout_micros.value, gpu.max_batch_size.value) == (1000, 32)
    cpu = parse_batching(config_file(dev, CPU, "batching.config"))  # 1 CPU, no GPU
    assert (cpu.num_batch_threads.value, cpu.batch_timeout_micros.value) == (1, 0)


def test_batching_values_from_config(prod: Recording):
    params = parse_batching(config_file(prod, STABLE, "batching.config"))
    assert params.max_batch_size.value == 64 and params.batch_timeout_micros.value == 2000
    assert list(params.allowed_batch_sizes) == [8, 16, 32, 64]


# 3. Hot model sync ---------------------------------------------------------------------------

def test_init_waits_and_sidecar_keeps_syncing(dev: Recording):
    spec = pod_spec(dev)
    init, sidecar = spec["initContainers"]
    assert init["command"][-1] == "wait" and "restartPolicy" not in init
    assert sidecar["command"][-1] == "loop" and sidecar["restartPolicy"] == "Always"
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["MODEL_SOURCE_URI"] == dev.outputs["modelsUri"]
    assert env["MODEL_SPEC_FILE"] == "/etc/tfserving/sync.models"
    assert int(env["SYNC_INTERVAL_SECONDS"]) == DEFAULT_SYNC_INTERVAL_SECONDS == 15  # tests/test_publish_to_serving.py
    assert init["image"].startswith("docker.io/amazon/aws-cli:")
    assert {m["name"]: m.get("readOnly", False) for m in server(dev)["volumeMounts"]}["models"] is True


def test_sync_spec_matches_what_tf_serving_loads(dev: Recording):
    expected = render_sync_spec([ServedModel("digits", "specific", versions=(1,)),
                                 ServedModel("digits-latest", "latest", latest_versions=2)])
    assert config_file(dev, STABLE, "sync.models") == expected
    canary = config_file(dev, CANARY, "sync.models")
    assert canary == render_sync_spec([ServedModel("digits", "specific", versions=(1, 2)),
                                       ServedModel("digits-latest", "latest", latest_versions=2)])


def test_tf_serving_polls_for_new_versions_and_reads_its_config_once(dev: Recording, plan_with):
    args = server(dev)["args"]
    # The config of a pod never changes (one immutable ConfigMap per revision): no config poll.
    assert not [a for a in args if a.startswith("--model_config_file_poll_wait_seconds")]
    assert "--file_system_poll_wait_seconds=5" in args  # the local emptyDir: cheap to poll
    rec = plan_with(**dev_servers(syncIntervalSeconds=120))
    env = {e["name"]: e["value"] for e in pod_spec(rec)["initContainers"][1]["env"]}
    assert env["SYNC_INTERVAL_SECONDS"] == "120"


def test_the_bucket_scheme_picks_the_sync_tool(tmp_path: Path):
    program = tmp_path / "__main__.py"
    program.write_text(textwrap.dedent("""
        from components.serving.model_server import ModelServer, ModelServerArgs
        from components.serving.tfserving_config import ServedModel
        ModelServer("gcs", ModelServerArgs(namespace="serving", server="gcs", models=[ServedModel("m")],
                    model_source_uri="gs://bucket/models", model_store="gs", service_account_name="tfserving"))
    """))
    import sys
    sys.path.insert(0, str(ROOT))
    rec = run_program(program, "test", "tfserving-platform", {}, [])
    init = pod_spec(rec, "gcs")["initContainers"][0]
    assert init["image"].startswith("gcr.io/google.com/cloudsdktool/google-cloud-cli:")
    assert {"name": "MODEL_SOURCE_URI", "value": "gs://bucket/models"} in init["env"]


# 4. Readiness that means "loaded" ------------------------------------------------------------

def test_probes_wait_for_model_load(dev: Recording, plan_with):
    c = server(dev)
    assert c["startupProbe"]["tcpSocket"]["port"] == "http"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 600
    assert c["readinessProbe"]["exec"]["command"] == ["/bin/bash", "/etc/tfserving/ready.sh"]
    assert "ready.sh" in mounted_config(dev, STABLE)
    # Readiness checks every specific version and every label (tests/test_readiness_probe.py runs it).
    assert mounted_config(dev, STABLE)["ready.models"].splitlines()[-2:] == [
        "digits specific 1 stable=1", "digits-latest latest 2"]
    assert "digits specific 1,2 canary=2 stable=1" in mounted_config(dev, CANARY)["ready.models"]
    assert c["livenessProbe"]["tcpSocket"]["port"] == "grpc"
    slow = server(plan_with(**dev_servers(startupTimeoutSeconds=1800)))
    assert slow["startupProbe"]["periodSeconds"] * slow["startupProbe"]["failureThreshold"] == 1800


# 5. Graceful shutdown and spread -------------------------------------------------------------

def test_graceful_shutdown_and_spread(dev: Recording):
    spec, c = pod_spec(dev), server(dev)
    pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 10 <= pause < spec["terminationGracePeriodSeconds"] <= 60
    keys = [t["topologyKey"] for t in spec["topologySpreadConstraints"]]
    assert keys == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    strategy = k8s_object(dev, "Deployment", STABLE)["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    pdb = k8s_object(dev, "PodDisruptionBudget", STABLE)["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"] == k8s_object(dev, "Deployment", STABLE)["spec"]["selector"]["matchLabels"]


def test_autoscaler_owns_the_stable_replica_count(dev: Recording, prod: Recording):
    assert dev.one("kubernetes:apps/v1:Deployment", f"{STABLE}-deployment").ignore_changes == ["spec.replicas"]
    assert dev.one("kubernetes:apps/v1:Deployment", f"{CANARY}-deployment").ignore_changes == []
    assert k8s_object(prod, "Deployment", STABLE)["spec"]["replicas"] == 2


# 6. Autoscaling on requests per second -------------------------------------------------------

def test_hpa_scales_on_requests_per_second_and_cpu(dev: Recording, prod: Recording):
    for rec, target, bounds in ((dev, "20", (1, 2)), (prod, "100", (2, 6))):
        hpa = k8s_object(rec, "HorizontalPodAutoscaler", STABLE)["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == bounds
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": STABLE}
        pods = next(m["pods"] for m in hpa["metrics"] if m["type"] == "Pods")
        assert pods["metric"]["name"] == RPS_METRIC
        assert pods["target"] == {"type": "AverageValue", "averageValue": target}
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["metrics"])
        assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


def test_rps_target_can_be_turned_off_or_fractional(plan_with):
    off = k8s_object(plan_with(**dev_servers(targetRequestsPerSecond=None)), "HorizontalPodAutoscaler", STABLE)
    assert [m["type"] for m in off["spec"]["metrics"]] == ["Resource"]
    frac = k8s_object(plan_with(**dev_servers(targetRequestsPerSecond=2.5)), "HorizontalPodAutoscaler", STABLE)
    assert frac["spec"]["metrics"][1]["pods"]["target"]["averageValue"] == "2500m"


# 7. Canary and A/B ---------------------------------------------------------------------------

def test_canary_deployment_serves_stable_and_canary_versions(dev: Recording):
    configs = model_config(dev, CANARY)
    assert list(configs["digits"].model_version_policy.specific.versions) == [1, 2]
    assert dict(configs["digits"].version_labels) == {"stable": 1, "canary": 2}
    assert k8s_object(dev, "Deployment", CANARY)["spec"]["replicas"] == 1
    # Callers keep one address: while a canary is active the client Service selects the router,
    # which splits between the per-track Services.
    assert k8s_object(dev, "Service", STABLE)["spec"]["selector"] == {
        "app.kubernetes.io/name": "tfserving-router", "app.kubernetes.io/instance": f"{STABLE}-router"}
    assert k8s_object(dev, "Service", f"{STABLE}-stable")["spec"]["selector"]["app.kubernetes.io/instance"] == STABLE
    assert k8s_object(dev, "Service", CANARY)["spec"]["selector"]["app.kubernetes.io/instance"] == CANARY
    # Without a canary it selects the stable pods directly; no router runs.
    assert k8s_object(dev, "Service", CPU)["spec"]["selector"]["app.kubernetes.io/instance"] == CPU
    assert [d["metadata"]["name"] for d in k8s_objects(dev, "Deployment") if "router" in d["metadata"]["name"]] \
        == [f"{STABLE}-router"]


def test_proxy_router_weights_and_pinned_paths(dev: Recording, prod: Recording):
    for rec, weight in ((dev, 20), (prod, 5)):
        assert not k8s_objects(rec, "HTTPRoute") and not k8s_objects(rec, "VirtualService")
        conf = k8s_object(rec, "ConfigMap", f"{STABLE}-router-config")["data"]["nginx.conf"]
        assert conf.count(f"{weight}% tfs_canary_") == 2  # REST and gRPC
        for path in ("/v1/models/digits/labels/canary", "/v1/models/digits/versions/2"):
            assert f"location = {path} {{ proxy_pass http://tfs_canary_rest; }}" in conf
            assert f"location ^~ {path}: {{ proxy_pass http://tfs_canary_rest; }}" in conf
        assert f"server {STABLE}-stable.serving.svc.cluster.local:8501;" in conf
        assert f"server {CANARY}.serving.svc.cluster.local:8500;" in conf


MESH = {"trafficRouter": "gateway-api", "clusterPrerequisites": ["gamma-mesh", "gateway-api-crds"]}


def test_canary_route_weights_and_pinned_paths(plan_with):
    for base, weights in (("dev", [80, 20]), ("prod", [95, 5])):
        rec = plan_with(base, **MESH)
        assert not [d for d in k8s_objects(rec, "Deployment") if "router" in d["metadata"]["name"]]
        (route,) = k8s_objects(rec, "HTTPRoute")
        assert route["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": STABLE, "port": 8501}]
        pinned, split = route["spec"]["rules"]
        assert [b["name"] for b in pinned["backendRefs"]] == [CANARY]
        paths = {m["path"]["value"] for m in pinned["matches"]}
        assert "/v1/models/digits/labels/canary:predict" in paths and "/v1/models/digits/versions/2" in paths
        assert [(b["name"], b["weight"]) for b in split["backendRefs"]] == list(zip([STABLE, CANARY], weights))


def test_promotion_is_one_change(plan_with):
    promoted = plan_with(**dev_servers(models={"digits": {"versionPolicy": "specific", "versions": [2],
                                                          "canaryVersion": 2}}))
    assert not [d for d in k8s_objects(promoted, "Deployment") if d["metadata"]["name"] == CANARY]
    assert not k8s_objects(promoted, "HTTPRoute")
    digits = model_config(promoted)["digits"]
    assert list(digits.model_version_policy.specific.versions) == [2]
    assert dict(digits.version_labels) == {"stable": 2}


def test_rollback_is_one_change(plan_with):
    rolled_back = plan_with(**dev_servers(models={"digits": PINNED_DIGITS}))
    assert {d["metadata"]["name"] for d in k8s_objects(rolled_back, "Deployment")} == {STABLE, CPU}
    assert dict(model_config(rolled_back)["digits"].version_labels) == {"stable": 1}


def test_every_config_change_is_a_new_immutable_config_that_only_new_pods_mount(dev: Recording, plan_with):
    def mounted(rec: Recording) -> str:
        return config_volume_name(k8s_object(rec, "Deployment", STABLE))

    same = plan_with(**dev_servers(models={"digits": {**PINNED_DIGITS, "canaryVersion": 2},
                                           "digits-latest": {"latestVersions": 2}}))
    relabelled = plan_with(**dev_servers(models={"digits": {"versionPolicy": "specific", "versions": [1, 2],
                                                            "labels": {"stable": 2}}}))
    more_versions = plan_with(**dev_servers(models={"digits": {**PINNED_DIGITS, "canaryVersion": 2},
                                                    "digits-latest": {"latestVersions": 3}}))
    assert mounted(same) == mounted(dev) and mounted(dev).startswith(f"{STABLE}-config-")
    assert len({mounted(dev), mounted(relabelled), mounted(more_versions)}) == 3
    for rec in (dev, relabelled):
        config = k8s_object(rec, "ConfigMap", mounted(rec))
        assert config["immutable"] is True
    # A new published version of a `latest` model needs no new config: the sync picks it up.
    assert "tfplatform.io/restart-checksum" not in (k8s_object(dev, "Deployment", STABLE)["spec"]["template"]
                                                    ["metadata"].get("annotations") or {})


def test_istio_mesh_gets_a_virtual_service(plan_with):
    rec = plan_with(trafficRouter="istio", clusterPrerequisites=["istio"])
    (vs,) = k8s_objects(rec, "VirtualService")
    assert not k8s_objects(rec, "HTTPRoute")
    assert vs["spec"]["hosts"] == [f"{STABLE}.serving.svc.cluster.local"]
    pinned, weighted = vs["spec"]["http"]
    assert [r["weight"] for r in weighted["route"]] == [80, 20]
    assert validate_custom_resources([vs]) == [None]
    assert k8s_object(rec, "Namespace", "serving")["metadata"]["labels"]["istio-injection"] == "enabled"
    egress = k8s_object(rec, "NetworkPolicy", f"{STABLE}-allow")["spec"]["egress"]
    # Sidecars start only once istiod (xDS, 15012) answers: exactly that, and only in istio-system.
    assert egress[2:] == [{"to": [namespaces("istio-system")], "ports": tcp(15012)}], egress


# 8. Clients ----------------------------------------------------------------------------------

def test_in_cluster_endpoints_are_outputs(dev: Recording):
    endpoints = dev.outputs["servingEndpoints"]
    assert endpoints["default"]["grpc"] == f"{STABLE}.serving.svc.cluster.local:8500"
    assert endpoints["default"]["rest"] == f"http://{STABLE}.serving.svc.cluster.local:8501"
    assert endpoints["default"]["canaryGrpc"] == f"{CANARY}.serving.svc.cluster.local:8500"
    assert "canaryGrpc" not in endpoints["cpu"]
    ports = {p["name"]: p["port"] for p in k8s_object(dev, "Service", STABLE)["spec"]["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    assert "externalUrl" not in dev.outputs and not k8s_objects(dev, "Gateway")


EXPOSED = {"exposure": {"enabled": True, "gatewayClassName": "eg", "hostname": "models.example.com",
                        "tlsSecretName": "models-tls", "proxyNamespaces": ["envoy-gateway-system"]},
           "clusterPrerequisites": ["gateway-api-crds"]}


def test_external_exposure_through_a_tls_gateway(plan_with):
    rec = plan_with(**EXPOSED)
    (gateway,) = k8s_objects(rec, "Gateway")
    (listener,) = gateway["spec"]["listeners"]
    assert (listener["protocol"], listener["port"], listener["hostname"]) == ("HTTPS", 443, "models.example.com")
    assert listener["tls"]["certificateRefs"] == [{"kind": "Secret", "name": "models-tls"}]
    external = [r for r in k8s_objects(rec, "HTTPRoute") if r["metadata"]["name"].endswith("-external")]
    assert {r["metadata"]["name"] for r in external} == {f"{STABLE}-external", f"{CPU}-external"}
    cpu_route = next(r for r in external if r["metadata"]["name"] == f"{CPU}-external")
    assert {m["path"]["value"] for m in cpu_route["spec"]["rules"][-1]["matches"]} >= {
        "/v1/models/digits-cpu", "/v1/models/digits-cpu:predict"}
    assert validate_custom_resources([gateway, *external]) == [None] * (1 + len(external))
    assert rec.outputs["externalUrl"] == "https://models.example.com"
    ingress = k8s_object(rec, "NetworkPolicy", f"{CPU}-allow")["spec"]["ingress"]
    proxies = [r for r in ingress if r["from"][0].get("namespaceSelector", {}).get("matchExpressions", [{}])[0]
               .get("values") == ["envoy-gateway-system"]]
    assert proxies and proxies[0]["ports"] == [{"protocol": "TCP", "port": 8501}]


def gateway_api_rule(rules: list[dict], path: str) -> dict | None:
    """The HTTPRoute rule a conformant Gateway API implementation sends ``path`` to. Precedence, from
    kubernetes-sigs/gateway-api apis/v1/httproute_types.go (HTTPRouteRule.Matches): across all rules an
    "Exact" path match wins, then the "PathPrefix" match with the most characters; remaining ties within
    one HTTPRoute go to the FIRST matching rule in list order. A rule without matches is PathPrefix "/".
    PathPrefix matches whole path elements (HTTPPathMatch): /a/b matches /a/b and /a/b/c, not /a/b:predict."""
    best: tuple | None = None
    for index, rule in enumerate(rules):
        for match in rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]:
            kind, value = match["path"]["type"], match["path"]["value"]
            prefix = value.rstrip("/")
            if kind == "Exact" and path == value:
                rank = (1, len(value), -index)
            elif kind == "PathPrefix" and (path == prefix or path.startswith(prefix + "/")):
                rank = (0, len(value), -index)
            else:
                continue
            if best is None or rank > best[0]:
                best = (rank, rule)
    return best and best[1]


def istio_http_route(http: list[dict], path: str) -> dict | None:
    """The VirtualService ``http`` route Istio sends ``path`` to: "an ordered list of route rules ... the
    first rule matching an incoming request is used" (istio.io reference, VirtualService.http); a route
    without ``match`` matches everything."""
    for route in http:
        if not route.get("match") or any(m["uri"].get("exact") == path or
                                         ("prefix" in m["uri"] and path.startswith(m["uri"]["prefix"]))
                                         for m in route["match"]):
            return route
    return None


# The GPU server's (``default``) canary in both stacks: digits version 2, canaryWeight 20.
CANARY_REQUESTS = [f"/v1/models/digits/{p}{s}" for p in ("labels/canary", "versions/2")
                   for s in ("", ":predict", ":classify", ":regress", "/metadata")]
OTHER_REQUESTS = ["/v1/models/digits:predict", "/v1/models/digits/labels/stable:predict",
                  "/v1/models/digits/versions/1:predict", "/v1/models/digits/versions/20",
                  "/v1/models/digits-latest:predict"]
EXPOSURE_BY_STACK = {
    "dev": (EXPOSED["exposure"], ["gateway-api-crds"]),
    "gke-dev": ({"enabled": True, "gatewayClassName": "gke-l7-global-external-managed",
                 "gatewayImplementation": "gke", "hostname": "models.example.com",
                 "tlsSecretName": "models-tls",
                 "proxyCidrs": ["35.191.0.0/16", "130.211.0.0/22"]}, []),
}
ROUTER_PREREQUISITES = {"gateway-api": ["gamma-mesh"], "istio": ["istio"], "proxy": []}


@pytest.mark.parametrize("base", ["dev", "gke-dev"])
@pytest.mark.parametrize("router", ["gateway-api", "istio", "proxy"])
def test_exposed_gpu_server_pins_canary_paths_to_the_canary(plan_with, base, router):
    """Issue 20: requests naming the canary (label or version) that arrive through the external Gateway
    must reach the canary pods, with every canary router; only the rest is split by canaryWeight."""
    exposure, prerequisites = EXPOSURE_BY_STACK[base]
    rec = plan_with(base, exposure=exposure, trafficRouter=router,
                    clusterPrerequisites=prerequisites + ROUTER_PREREQUISITES[router])
    rules = k8s_object(rec, "HTTPRoute", f"{STABLE}-external")["spec"]["rules"]
    canary_ref, stable_ref = ({"kind": "Service", "name": name, "port": 8501} for name in (CANARY, STABLE))
    if router == "proxy":
        # The external route only reaches the client Service, whose pods are the nginx router that pins the
        # canary paths itself (test_proxy_router_weights_and_pinned_paths): it must not bypass the router.
        assert [r["backendRefs"] for r in rules] == [[stable_ref]], \
            f"{base}: the external route bypasses the canary router: {rules}"
        selector = k8s_object(rec, "Service", STABLE)["spec"]["selector"]
        assert selector["app.kubernetes.io/name"] == "tfserving-router", \
            f"{base}: the client Service behind the external route does not select the canary router"
        return
    for path in CANARY_REQUESTS:
        rule = gateway_api_rule(rules, path)
        assert rule is not None and rule["backendRefs"] == [canary_ref], (
            f"{base}/{router}: external {path} goes to {rule and rule['backendRefs']}, not {canary_ref}: "
            "a client asking for the canary by label or version would get the stable model (or a 404)")
    for path in OTHER_REQUESTS:
        rule = gateway_api_rule(rules, path)
        weights = rule and [(b["name"], b["port"], b.get("weight")) for b in rule["backendRefs"]]
        assert weights == [(STABLE, 8501, 80), (CANARY, 8501, 20)], (
            f"{base}/{router}: external {path} goes to {weights}, "
            f"expected {STABLE} 80 and {CANARY} 20 (canaryWeight 20)")
    if router == "istio":
        # The east-west VirtualService pins the same paths ahead of its weighted route.
        http = k8s_object(rec, "VirtualService", f"{STABLE}-canary")["spec"]["http"]
        canary_host = f"{CANARY}.serving.svc.cluster.local"
        for path in CANARY_REQUESTS:
            route = istio_http_route(http, path)
            assert route is not None and route["route"] == [{"destination": {"host": canary_host}}], \
                f"{base}/istio: in-mesh {path} is not pinned to {canary_host}: {route}"
        assert [r["weight"] for r in istio_http_route(http, OTHER_REQUESTS[0])["route"]] == [80, 20]


def test_network_policy_default_deny_and_narrow_allow(dev: Recording):
    deny = k8s_object(dev, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    allow = k8s_object(dev, "NetworkPolicy", f"{STABLE}-allow")["spec"]
    # One policy covers both tracks of the server.
    assert allow["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "tfserving",
                                                   "tfplatform.io/server": "default"}
    callers, scrapers, router = allow["ingress"]
    assert callers["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["apps"]
    assert "podSelector" not in callers["from"][0]
    assert {p["port"] for p in callers["ports"]} == {8500, 8501}
    assert scrapers["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["monitoring"]
    assert [p["port"] for p in scrapers["ports"]] == [8501]
    # The canary router (same namespace) reaches both ports; nothing else from the namespace does.
    assert router["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "tfserving-router", "app.kubernetes.io/instance": f"{STABLE}-router"}}}]
    assert {p["port"] for p in router["ports"]} == {8500, 8501}
    dns, https = allow["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert https["to"][0]["ipBlock"]["except"] == ["169.254.169.254/32"]


APP = "app.kubernetes.io/name"
KUBE_DNS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
             "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]


def test_model_pods_egress_is_https_and_cluster_dns(dev: Recording, prod: Recording, gke: Recording):
    """Issue 20: the sync containers reach S3 / GCS / STS on 443 only; a wrong port (or no DNS) under the
    namespace's default deny leaves every model pod without its models, on a plan nothing else checks."""
    for stack, rec in (("dev", dev), ("prod", prod), ("gke-dev", gke)):
        policies = [p for p in k8s_objects(rec, "NetworkPolicy")
                    if (p["spec"]["podSelector"].get("matchLabels") or {}).get(APP) == "tfserving"]
        assert policies, f"{stack}: no NetworkPolicy selects the model pods"
        for policy in policies:
            name, egress = policy["metadata"]["name"], policy["spec"]["egress"]
            internet = [r for r in egress
                        if any(peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for peer in r["to"])]
            assert [r["ports"] for r in internet] == [[{"protocol": "TCP", "port": 443}]], (
                f"{stack} {name}: egress to 0.0.0.0/0 is {internet}, expected exactly TCP 443: the model "
                "sync needs HTTPS to the bucket and STS, and nothing else should leave the pods")
            dns = [r for r in egress if r["to"] == KUBE_DNS]
            assert [sorted((p["protocol"], p["port"]) for p in r["ports"]) for r in dns] == \
                [[("TCP", 53), ("UDP", 53)]], f"{stack} {name}: no UDP+TCP 53 egress to kube-dns: {egress}"


SERVER_PODS = {"app.kubernetes.io/name": "tfserving", "tfplatform.io/server": "default"}
ROUTER_PODS = {"app.kubernetes.io/name": "tfserving-router", "app.kubernetes.io/instance": f"{STABLE}-router"}
DNS_RULE = {"to": KUBE_DNS, "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def namespaces(*names: str) -> dict:
    return {"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(names)}]}}


def tcp(*ports: int) -> list[dict]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def test_network_policy_rules_are_exactly_the_allowed_flows(dev: Recording):
    """Every key, operator and protocol of the model pods' and the router's policies, written out here
    rather than trusted to the snapshots: a misspelt key (``In`` -> ``in``, ``protocol`` -> ``PROTOCOL``)
    is an invalid or a different policy, and under the namespace's default deny that is either an outage
    or a hole (mutation run, issue 20)."""
    allow = k8s_object(dev, "NetworkPolicy", f"{STABLE}-allow")
    # In the serving namespace: a policy elsewhere selects nothing, and the default deny then blocks all.
    assert allow["metadata"] == {"name": f"{STABLE}-allow", "namespace": "serving", "labels": SERVER_PODS}
    assert allow["spec"] == {
        "podSelector": {"matchLabels": SERVER_PODS}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [namespaces("apps")], "ports": tcp(8500, 8501)},
                    {"from": [namespaces("monitoring")], "ports": tcp(8501)},
                    {"from": [{"podSelector": {"matchLabels": ROUTER_PODS}}], "ports": tcp(8500, 8501)}],
        "egress": [DNS_RULE, {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}],
                              "ports": tcp(443)}]}
    router = k8s_object(dev, "NetworkPolicy", f"{STABLE}-router-allow")
    assert router["metadata"] == {"name": f"{STABLE}-router-allow", "namespace": "serving", "labels": ROUTER_PODS}
    assert router["spec"] == {
        "podSelector": {"matchLabels": ROUTER_PODS}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [namespaces("apps")], "ports": tcp(8500, 8501)}],
        "egress": [DNS_RULE, {"to": [{"podSelector": {"matchLabels": SERVER_PODS}}], "ports": tcp(8500, 8501)}]}


def test_network_policy_admits_a_load_balancers_ranges_and_labelled_callers_only(plan_with):
    exposure, _ = EXPOSURE_BY_STACK["gke-dev"]
    rec = plan_with("gke-dev", exposure=exposure, allowedPodLabels={"tfplatform.io/client": "true"})
    spec = k8s_object(rec, "NetworkPolicy", f"{STABLE}-allow")["spec"]
    callers = {**namespaces("apps"), "podSelector": {"matchLabels": {"tfplatform.io/client": "true"}}}
    lb = {"from": [{"ipBlock": {"cidr": "35.191.0.0/16"}}, {"ipBlock": {"cidr": "130.211.0.0/22"}}],
          "ports": tcp(8501)}
    assert spec["ingress"] == [{"from": [callers], "ports": tcp(8500, 8501)}, lb,
                               {"from": [namespaces("monitoring")], "ports": tcp(8501)},
                               {"from": [{"podSelector": {"matchLabels": ROUTER_PODS}}], "ports": tcp(8500, 8501)}]
    # GKE Workload Identity: the metadata server (and Dataplane V2's) instead of the node's credentials.
    assert spec["egress"][2:] == [{"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}], "ports": tcp(80)},
                                  {"to": [{"ipBlock": {"cidr": "169.254.169.252/32"}}], "ports": tcp(988)}]


def test_network_policy_is_a_component_of_its_server(dev: Recording):
    """The policy's component type and parent chain: its URN (and every child's) depends on both, so a
    change would replace the live policies (delete, then create) on the next `pulumi up`."""
    for child in (f"{STABLE}-allow", f"{STABLE}-router-allow"):
        policy = next(r for r in dev.resources if r.type == "kubernetes:networking.k8s.io/v1:NetworkPolicy"
                      and r.name == child)
        component = dev.by_urn(policy.parent)
        assert (component.type, component.name) == ("tfplatform:serving:ServingNetworkPolicy", STABLE), child
        assert dev.by_urn(component.parent).type.startswith("tfplatform:serving:")


def test_pod_labels_without_namespaces_is_refused_by_the_component(tmp_path):
    program = tmp_path / "__main__.py"
    program.write_text(textwrap.dedent("""
        from components.serving.network_policy import ServingNetworkPolicy, ServingNetworkPolicyArgs
        ServingNetworkPolicy("np", ServingNetworkPolicyArgs(namespace="serving", selector={"a": "b"},
                                                            allowed_pod_labels={"c": "d"}))
    """))
    with pytest.raises(Exception, match="ServingNetworkPolicy np: allowed_pod_labels needs allowed_namespaces"):
        run_program(program, "dev", "p", {}, [])


def test_router_takes_the_callers_place_in_the_network_policy(dev: Recording):
    router = k8s_object(dev, "NetworkPolicy", f"{STABLE}-router-allow")["spec"]
    assert router["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "tfserving-router"
    (callers,) = router["ingress"]  # the same callers as the model pods, no scrapers
    assert callers["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["apps"]
    dns, models = router["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert models["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "tfserving",
                                                             "tfplatform.io/server": "default"}}}]
    assert {p["port"] for p in models["ports"]} == {8500, 8501}
    assert not [p for p in k8s_objects(dev, "NetworkPolicy") if p["metadata"]["name"] == f"{CPU}-router-allow"]


def test_only_labelled_pods_may_call_when_configured(plan_with):
    rec = plan_with(allowedPodLabels={"tfplatform.io/client": "true"})
    callers = k8s_object(rec, "NetworkPolicy", f"{STABLE}-allow")["spec"]["ingress"][0]
    assert callers["from"][0]["podSelector"] == {"matchLabels": {"tfplatform.io/client": "true"}}
    nobody = plan_with(allowedNamespaces=[])
    ingress = k8s_object(nobody, "NetworkPolicy", f"{CPU}-allow")["spec"]["ingress"]
    assert [r["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] for r in ingress] == [["monitoring"]]


# 9. GPU specifics ----------------------------------------------------------------------------

def test_gpu_image_requests_and_toleration_exactly_when_gpus(dev: Recording):
    gpu, cpu = server(dev, STABLE), server(dev, CPU)
    assert gpu["image"] == "docker.io/tensorflow/serving:2.18.0-gpu"
    assert gpu["resources"]["requests"]["nvidia.com/gpu"] == gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod_spec(dev)["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert cpu["image"] == "docker.io/tensorflow/serving:2.18.0"
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert "tolerations" not in pod_spec(dev, CPU)
    assert not any(a.startswith("--per_process_gpu_memory_fraction") for a in gpu["args"])


def test_shared_gpus_cap_each_servers_memory(plan_with):
    rec = plan_with(nodePools={"system": {"instanceTypes": ["m6i.large"], "minSize": 2, "desiredSize": 2},
                               "gpu": {"instanceTypes": ["g5.xlarge"], "gpusPerNode": 1, "gpuTimeSlicing": 2,
                                       "minSize": 0, "desiredSize": 0, "maxSize": 3}})
    assert "--per_process_gpu_memory_fraction=0.45" in server(rec)["args"]
    explicit = plan_with(**dev_servers(gpuMemoryFraction=0.6))
    assert "--per_process_gpu_memory_fraction=0.6" in server(explicit)["args"]


def test_image_override_is_used_as_given(plan_with):
    image = "registry.example.com/mirror/tensorflow-serving:2.18.0-gpu"
    assert server(plan_with(**dev_servers(image=image)))["image"] == image


# Cross-cutting -------------------------------------------------------------------------------

def test_every_container_runs_restricted(dev: Recording):
    for name in (STABLE, CANARY, CPU):
        spec = pod_spec(dev, name)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] >= 10000
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] == "tfserving"
        containers = spec["containers"] + spec["initContainers"]
        assert len(containers) == 3
        for c in containers:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert c["resources"]["limits"] == c["resources"]["requests"], c["name"]
            assert ":" in c["image"] and not c["image"].endswith(":latest"), c["name"]


def test_namespace_enforces_restricted_pod_security(dev: Recording):
    ns = k8s_object(dev, "Namespace", "serving")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "istio-injection" not in ns["metadata"]["labels"]
    assert k8s_object(dev, "ServiceAccount", "tfserving")["automountServiceAccountToken"] is False


def test_serving_objects_use_the_cluster_provider(dev: Recording):
    provider = dev.one("pulumi:providers:kubernetes", "eks-k8s")
    assert provider.inputs["enableConfigMapMutable"] in (True, "true")
    for obj in dev.resources:
        if obj.type.startswith("kubernetes:"):
            assert obj.provider.startswith(provider.urn + "::"), obj.name


# Survivors of the first mutation run (issue 20).

@pytest.mark.parametrize("router", ["proxy", "istio"])
def test_every_named_service_port_exists_on_the_pods_it_selects(plan_with, router):
    """A Service's named targetPort must be a container port of the pods it selects, or the Service has no
    endpoints (the canary router's ``http`` port: renaming it on the container alone is an outage)."""
    rec = plan_with(trafficRouter=router, clusterPrerequisites=["istio"] if router == "istio" else [])
    workloads = k8s_objects(rec, "Deployment")
    checked = 0
    for service in k8s_objects(rec, "Service"):
        selector = service["spec"].get("selector") or {}
        pods = [w["spec"]["template"] for w in workloads
                if w["metadata"].get("namespace") == service["metadata"].get("namespace")
                and selector and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        for port in service["spec"]["ports"]:
            if isinstance(port.get("targetPort"), str) and pods:
                names = [{p.get("name") for c in pod["spec"]["containers"] for p in c.get("ports", [])} for pod in pods]
                assert all(port["targetPort"] in n for n in names), \
                    f"Service {service['metadata']['name']} targets port {port['targetPort']!r}, pods have {names}"
                checked += 1
    assert checked, "no Service with a named targetPort: the check checked nothing"


def test_istio_weighted_route_goes_to_the_stable_and_canary_services(plan_with):
    rec = plan_with(trafficRouter="istio", clusterPrerequisites=["istio"])
    http = k8s_object(rec, "VirtualService", f"{STABLE}-canary")["spec"]["http"]
    weighted = http[-1]["route"]
    assert [(r["destination"]["host"], r["weight"]) for r in weighted] == [
        (f"{STABLE}.serving.svc.cluster.local", 80), (f"{CANARY}.serving.svc.cluster.local", 20)]
