"""TF Serving on Kubernetes as the program renders it (mock engine)."""

from __future__ import annotations

from stacks.mock_engine import Recording
from tests.conftest import k8s_object


def pod_spec(rec: Recording) -> dict:
    return k8s_object(rec, "Deployment", "tfserving")["spec"]["template"]["spec"]


def server(rec: Recording) -> dict:
    return next(c for c in pod_spec(rec)["containers"] if c["name"] == "tfserving")


def test_gpu_image_exactly_when_gpus_requested(dev: Recording, plan_with):
    gpu = server(dev)
    assert gpu["image"] == "docker.io/tensorflow/serving:2.18.0-gpu"
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod_spec(dev)["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod_spec(dev)["nodeSelector"] == {"tfplatform.io/node-pool": "gpu"}

    cpu_rec = plan_with(servingGpus=0, servingNodePool="system")
    cpu = server(cpu_rec)
    assert cpu["image"] == "docker.io/tensorflow/serving:2.18.0"
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert "tolerations" not in pod_spec(cpu_rec)
    assert pod_spec(cpu_rec)["nodeSelector"] == {"tfplatform.io/node-pool": "system"}


def test_server_flags_config_and_metrics(dev: Recording):
    args = server(dev)["args"]
    assert "--model_config_file=/etc/tfserving/models.config" in args
    assert "--monitoring_config_file=/etc/tfserving/monitoring.config" in args
    assert "--model_config_file_poll_wait_seconds=60" in args
    assert {"--port=8500", "--rest_api_port=8501"} <= set(args)
    assert server(dev)["command"] == ["tensorflow_model_server"]


def test_probes_wait_for_model_load(dev: Recording):
    c = server(dev)
    assert c["startupProbe"]["tcpSocket"]["port"] == "http"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 600
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1/models/digits"
    assert "livenessProbe" in c
    assert c["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert pod_spec(dev)["terminationGracePeriodSeconds"] > c["lifecycle"]["preStop"]["sleep"]["seconds"]


def test_every_container_runs_restricted(dev: Recording):
    spec = pod_spec(dev)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] >= 10000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    containers = spec["containers"] + spec["initContainers"]
    assert len(containers) == 3
    for c in containers:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert c["resources"]["limits"]["memory"] == c["resources"]["requests"]["memory"], c["name"]
        assert ":" in c["image"] and not c["image"].endswith(":latest"), c["name"]


def test_namespace_enforces_restricted_pod_security(dev: Recording):
    ns = k8s_object(dev, "Namespace", "serving")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_models_synced_from_bucket_into_shared_volume(dev: Recording):
    spec = pod_spec(dev)
    init, sidecar = spec["initContainers"]
    assert init["command"][-1] == "once" and "restartPolicy" not in init
    assert sidecar["command"][-1] == "loop" and sidecar["restartPolicy"] == "Always"
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["MODEL_SOURCE_URI"] == dev.outputs["modelsUri"]
    assert env["MODEL_NAMES"] == "digits"
    assert init["image"].startswith("docker.io/amazon/aws-cli:")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["models"]
    mounts = {m["name"]: m for m in server(dev)["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True


def test_rollout_never_drops_below_desired(dev: Recording, prod: Recording):
    strategy = k8s_object(dev, "Deployment", "tfserving")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert k8s_object(prod, "Deployment", "tfserving")["spec"]["replicas"] == 2


def test_autoscaler_owns_the_replica_count(dev: Recording):
    deployment = dev.one("kubernetes:apps/v1:Deployment", "tfserving-deployment")
    assert deployment.ignore_changes == ["spec.replicas"]


def test_service_exposes_grpc_and_rest(dev: Recording):
    ports = {p["name"]: p["port"] for p in k8s_object(dev, "Service", "tfserving")["spec"]["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    assert dev.outputs["servingGrpcEndpoint"] == "tfserving.serving.svc.cluster.local:8500"


def test_hpa_and_pdb(dev: Recording, prod: Recording):
    hpa = k8s_object(prod, "HorizontalPodAutoscaler", "tfserving")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert {m["resource"]["name"] for m in hpa["metrics"]} == {"cpu", "memory"}
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tfserving"}
    pdb = k8s_object(dev, "PodDisruptionBudget", "tfserving")["spec"]
    assert pdb["maxUnavailable"] == 1


def test_network_policy_default_deny_and_narrow_allow(dev: Recording):
    deny = k8s_object(dev, "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    allow = k8s_object(dev, "NetworkPolicy", "tfserving-allow")["spec"]
    callers, scrapers = allow["ingress"]
    assert callers["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["apps"]
    assert {p["port"] for p in callers["ports"]} == {8500, 8501}
    assert scrapers["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["monitoring"]
    assert [p["port"] for p in scrapers["ports"]] == [8501]
    dns, https = allow["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert https["ports"] == [{"protocol": "TCP", "port": 443}]
    assert https["to"][0]["ipBlock"]["except"] == ["169.254.169.254/32"]


def test_no_allowed_namespaces_means_only_monitoring(plan_with):
    rec = plan_with(allowedNamespaces=[])
    allow = k8s_object(rec, "NetworkPolicy", "tfserving-allow")["spec"]
    assert len(allow["ingress"]) == 1
    assert allow["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["monitoring"]


def test_serving_objects_use_the_cluster_provider(dev: Recording):
    provider = dev.one("pulumi:providers:kubernetes", "eks-k8s")
    for obj in dev.resources:
        if obj.type.startswith("kubernetes:"):
            assert obj.provider.startswith(provider.urn + "::"), obj.name
