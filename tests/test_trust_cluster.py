"""Issue 19: nothing in the cluster can read more than its job needs.

Judged on the recorded plans (the Helm charts' values as the program passes them, the Namespaces, IAM
roles, add-ons, pod templates and GKE resources), with the upstream template logic each check relies on
cited where it is modelled.
"""

from __future__ import annotations

import json

import pytest

from components.aws.eks_cluster import CNI_POLICY
from components.pod_security import PRIVILEGED_REASONS, REASON_ANNOTATION
from stacks.mock_engine import GCP_PROJECT_NUMBER, Recording
from tests.conftest import k8s_objects

CHART = "kubernetes:helm.sh/v4:Chart"

# Which installed chart gets to read Secrets cluster-wide, and why; each row cites the RBAC template of
# the pinned version (components/helm_charts.py) that :func:`cluster_secret_readers` models.
# chart -> {component: (reads Secrets cluster-wide with our values, why / template)}
SECRET_READS = {
    "kube-prometheus-stack": {
        "prometheus-operator": (True, "needed: it reads the Secrets that ServiceMonitors/PodMonitors of any "
                                      "namespace reference (basic auth, TLS) and writes Prometheus' generated "
                                      "config Secret; kube-prometheus-stack 75.9.0 "
                                      "templates/prometheus-operator/clusterrole.yaml (configmaps, secrets: *)"),
        "grafana": (False, "grafana 9.2.10 templates/clusterrole.yaml grants configmaps+secrets "
                           "get/list/watch cluster-wide unless rbac.namespaced; templates/role.yaml then grants "
                           "them in Grafana's namespace only; we set rbac.namespaced and search that namespace"),
        "kube-state-metrics": (False, "kube-state-metrics 6.1.0 templates/role.yaml lists/watches secrets "
                                      "iff 'secrets' is in .Values.collectors (it is by default); dropped"),
        "prometheus": (False, "kube-prometheus-stack 75.9.0 templates/prometheus/clusterrole.yaml: nodes, "
                              "services, endpoints, pods, ingresses, endpointslices only"),
        "prometheus-node-exporter": (False, "prometheus-node-exporter 4.47.1: no Role/ClusterRole on secrets"),
    },
    "prometheus-adapter": {
        "prometheus-adapter": (False, "prometheus-adapter 4.11.0 templates/cluster-role-resource-reader.yaml: "
                                      "namespaces, pods, services, configmaps; no secrets"),
    },
    "dcgm-exporter": {
        "dcgm-exporter": (False, "dcgm-exporter chart 3.4.0 templates/role.yaml: get on the one ConfigMap "
                                 "exporter-metrics-config-map in its namespace"),
    },
    "nvidia-device-plugin": {
        "nvidia-device-plugin": (False, "k8s-device-plugin v0.17.1 deployments/helm/nvidia-device-plugin/"
                                        "templates/role.yml: nodes (and nodefeatures with gfd+nfd, off)"),
    },
    "cluster-autoscaler": {
        "cluster-autoscaler": (False, "cluster-autoscaler chart 9.51.0 templates/clusterrole.yaml: no secrets"),
    },
    "keda": {
        "keda-operator": (False, "keda chart 2.20.2 templates/manager/clusterrole.yaml lists/watches secrets "
                                 "cluster-wide unless permissions.operator.restrict.secret; we set it, and the "
                                 "operator reads Secrets in its own namespace only"),
    },
    "keda-add-ons-http": {
        "keda-add-ons-http": (False, "keda-add-ons-http chart 0.15.0: no template names secrets (interceptor, "
                                     "operator and scaler rbac.yml, rbac-aggregateclusterroles.yaml)"),
    },
}

KSM_DEFAULT_COLLECTORS_HAVE_SECRETS = True
"""kube-state-metrics 6.1.0 values.yaml ``collectors`` lists ``secrets``: unset collectors mean secret reads."""


def _extra_rules_read_secrets(rules: list | None) -> bool:
    return any("secrets" in (rule.get("resources") or []) or "*" in (rule.get("resources") or [])
               for rule in rules or [])


def cluster_secret_readers(chart: str, values: dict, namespace: str) -> set[str]:
    """The components of ``chart`` that can read Secrets outside their own namespace with ``values``
    (the template logic cited in :data:`SECRET_READS`)."""
    readers: set[str] = set()
    if chart == "kube-prometheus-stack":
        readers.add("prometheus-operator")
        grafana = values.get("grafana") or {}
        if grafana.get("enabled", True):
            rbac, sidecar = grafana.get("rbac") or {}, grafana.get("sidecar") or {}
            # templates/clusterrole.yaml: created when rbac.create and (not namespaced or extra rules).
            if rbac.get("create", True) and (not rbac.get("namespaced", False)
                                             or _extra_rules_read_secrets(rbac.get("extraClusterRoleRules"))):
                readers.add("grafana")
            # A sidecar told to search beyond Grafana's namespace needs (and, with a ClusterRole, has)
            # reads there: only Grafana's own namespace is acceptable.
            for kind in ("dashboards", "datasources"):
                searched = (sidecar.get(kind) or {}).get("searchNamespace")
                if searched is not None and list(searched) != [namespace]:
                    readers.add("grafana")
        ksm = values.get("kube-state-metrics") or {}
        collectors = ksm.get("collectors")
        if (KSM_DEFAULT_COLLECTORS_HAVE_SECRETS if collectors is None else "secrets" in collectors) \
                or _extra_rules_read_secrets((ksm.get("rbac") or {}).get("extraRules")):
            readers.add("kube-state-metrics")
    elif chart == "keda":
        restrict = ((values.get("permissions") or {}).get("operator") or {}).get("restrict") or {}
        if not restrict.get("secret", False):
            readers.add("keda-operator")
    elif _extra_rules_read_secrets((values.get("rbac") or {}).get("extraRules")):
        readers.add(chart)
    return readers


def charts(rec: Recording) -> list:
    return rec.of_type(CHART)


@pytest.mark.parametrize("stack", ["dev", "prod", "gke"])
def test_no_chart_reads_secrets_cluster_wide_unless_the_table_says_why(stack: str, request):
    rec: Recording = request.getfixturevalue(stack)
    installed = charts(rec)
    assert installed, "no chart recorded"
    for release in installed:
        chart, values, namespace = release.inputs["chart"], release.inputs["values"], release.inputs["namespace"]
        assert chart in SECRET_READS, f"{chart}: not assessed in SECRET_READS"
        allowed = {component for component, (reads, _) in SECRET_READS[chart].items() if reads}
        assert cluster_secret_readers(chart, values, namespace) == allowed, (stack, chart)


def test_grafana_searches_and_reads_only_the_monitoring_namespace(dev: Recording):
    (kps,) = [r for r in charts(dev) if r.inputs["chart"] == "kube-prometheus-stack"]
    grafana, namespace = kps.inputs["values"]["grafana"], kps.inputs["namespace"]
    assert grafana["rbac"]["namespaced"] is True
    assert grafana["sidecar"]["dashboards"]["searchNamespace"] == [namespace]
    assert grafana["sidecar"]["datasources"]["searchNamespace"] == [namespace]
    # The platform's dashboards are where the sidecar looks.
    dashboards = [c for c in k8s_objects(dev, "ConfigMap")
                  if (c["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
    assert dashboards and {c["metadata"]["namespace"] for c in dashboards} == {namespace}


def test_the_table_check_fails_on_cluster_wide_grafana_or_secret_collectors():
    # The check itself can fail: the chart defaults (kube-prometheus-stack's searchNamespace ALL,
    # rbac.namespaced false, the default collectors) are flagged.
    assert cluster_secret_readers("kube-prometheus-stack", {}, "monitoring") == {
        "prometheus-operator", "grafana", "kube-state-metrics"}
    assert "grafana" in cluster_secret_readers("kube-prometheus-stack", {"grafana": {
        "rbac": {"namespaced": True}, "sidecar": {"dashboards": {"searchNamespace": "ALL"}}},
        "kube-state-metrics": {"collectors": []}}, "monitoring")


def _namespaces(rec: Recording) -> dict[str, dict]:
    return {o["metadata"]["name"]: o["metadata"] for o in k8s_objects(rec, "Namespace")}


@pytest.mark.parametrize("stack", ["dev", "prod", "gke"])
def test_namespaces_are_privileged_only_with_a_written_reason(stack: str, request):
    rec: Recording = request.getfixturevalue(stack)
    namespaces = _namespaces(rec)
    assert namespaces
    for name, meta in namespaces.items():
        level = meta["labels"]["pod-security.kubernetes.io/enforce"]
        if level == "privileged":
            assert (meta.get("annotations") or {}).get(REASON_ANNOTATION) in PRIVILEGED_REASONS.values(), name
        else:
            assert level in ("baseline", "restricted"), (name, level)


@pytest.mark.parametrize("stack", ["dev", "gke"])
def test_node_exporter_and_gpu_exporters_leave_monitoring_baseline(stack: str, request):
    rec: Recording = request.getfixturevalue(stack)
    namespaces = _namespaces(rec)
    (kps,) = [r for r in charts(rec) if r.inputs["chart"] == "kube-prometheus-stack"]
    monitoring = kps.inputs["namespace"]
    assert namespaces[monitoring]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    node_ns = kps.inputs["values"]["prometheus-node-exporter"]["namespaceOverride"]
    assert node_ns != monitoring
    assert namespaces[node_ns]["annotations"][REASON_ANNOTATION] == PRIVILEGED_REASONS["node-exporter"]
    (dcgm,) = [r for r in charts(rec) if r.inputs["chart"] == "dcgm-exporter"]
    assert dcgm.inputs["namespace"] != monitoring
    assert namespaces[dcgm.inputs["namespace"]]["annotations"][REASON_ANNOTATION] == PRIVILEGED_REASONS["gpu-addons"]


def _one(rec: Recording, type_: str, name: str):
    (found,) = [r for r in rec.resources if r.type == type_ and r.name == name]
    return found


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_node_role_has_no_cni_policy_and_aws_node_has_its_own_role(stack: str, request):
    rec: Recording = request.getfixturevalue(stack)
    attachments = rec.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    cni = [a for a in attachments if a.inputs["policyArn"].endswith(f"/{CNI_POLICY}")]
    node_role = _one(rec, "aws:iam/role:Role", "eks-node-role")
    assert json.loads(node_role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"}
    assert not [a for a in attachments if a.inputs["role"].startswith("eks-node-role-")
                and a.inputs["policyArn"].endswith(f"/{CNI_POLICY}")]
    (cni_attachment,) = cni
    assert cni_attachment.inputs["role"].startswith("eks-vpc-cni-role-")

    cni_role = _one(rec, "aws:iam/role:Role", "eks-vpc-cni-role")
    (statement,) = json.loads(cni_role.inputs["assumeRolePolicy"])["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"]["Federated"].startswith("arn:aws:iam::") and ":oidc-provider/" in \
        statement["Principal"]["Federated"]
    conditions = statement["Condition"]["StringEquals"]
    assert sorted(k.rsplit(":", 1)[1] for k in conditions) == ["aud", "sub"]
    assert {k.rsplit(":", 1)[1]: v for k, v in conditions.items()} == {
        "sub": "system:serviceaccount:kube-system:aws-node", "aud": "sts.amazonaws.com"}

    addon = _one(rec, "aws:eks/addon:Addon", "eks-vpc-cni")
    assert addon.inputs["serviceAccountRoleArn"].split(":role/")[1].startswith("eks-vpc-cni-role-")
    # The add-on is updated only once its role can manage ENIs.
    assert cni_attachment.urn in addon.dependencies
    others = [a for a in rec.of_type("aws:eks/addon:Addon") if a.name != "eks-vpc-cni"]
    assert others and not [a for a in others if a.inputs.get("serviceAccountRoleArn")]


def irsa_webhook_injection(pod_template: dict, role_arn: str | None) -> dict[str, dict]:
    """What the EKS pod identity webhook adds to each container of a pod whose service account carries
    ``eks.amazonaws.com/role-arn``: every container and init container except those named in the pod's
    ``eks.amazonaws.com/skip-containers`` (comma-separated) get AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE
    and the projected token mount (aws/amazon-eks-pod-identity-webhook README "Usage";
    pkg/handler/handler.go getContainersToSkip, addEnvToContainer)."""
    annotations = (pod_template.get("metadata") or {}).get("annotations") or {}
    skipped = set(filter(None, annotations.get("eks.amazonaws.com/skip-containers", "").split(",")))
    spec = pod_template["spec"]
    injected = {}
    for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
        if role_arn and container["name"] not in skipped:
            injected[container["name"]] = {
                "AWS_ROLE_ARN": role_arn,
                "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}
        else:
            injected[container["name"]] = {}
    return injected


def _serving_pods(rec: Recording) -> list[dict]:
    pods = [d["spec"]["template"] for d in k8s_objects(rec, "Deployment")
            if "tfserving" in [c["name"] for c in d["spec"]["template"]["spec"]["containers"]]]
    assert pods
    return pods


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_tfserving_gets_no_aws_token_and_the_sync_containers_do(stack: str, request):
    rec: Recording = request.getfixturevalue(stack)
    (account,) = [a for a in k8s_objects(rec, "ServiceAccount")
                  if "eks.amazonaws.com/role-arn" in ((a["metadata"].get("annotations")) or {})]
    role_arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    for pod in _serving_pods(rec):
        spec = pod["spec"]
        assert spec["serviceAccountName"] == account["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
        injected = irsa_webhook_injection(pod, role_arn)
        assert injected["tfserving"] == {}
        syncs = [c["name"] for c in spec["initContainers"]]
        assert syncs and all(set(injected[s]) == {"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"} for s in syncs)
        (server,) = [c for c in spec["containers"] if c["name"] == "tfserving"]
        assert not [m for m in server["volumeMounts"] if "serviceaccount" in m["mountPath"]]
        assert not [e for e in server["env"] if e["name"].startswith("AWS_")]


def test_gke_serving_pods_mount_no_kubernetes_token(gke: Recording):
    for pod in _serving_pods(gke):
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert not [v for v in pod["spec"]["volumes"] if "projected" in v]


def test_gke_encrypts_secrets_with_its_own_kms_key(gke: Recording):
    cluster = _one(gke, "gcp:container/cluster:Cluster", "gke-cluster")
    ring = _one(gke, "gcp:kms/keyRing:KeyRing", "gke-secrets")
    key = _one(gke, "gcp:kms/cryptoKey:CryptoKey", "gke-secrets")
    grant = _one(gke, "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember", "gke-secrets-gke-agent")
    encryption = cluster.inputs["databaseEncryption"]
    assert encryption["state"] == "ENCRYPTED"
    # The mock engine's ids are "<physical name>-id"; the cluster names this program's key.
    assert encryption["keyName"] == grant.inputs["cryptoKeyId"]
    assert key.urn in grant.dependencies and grant.urn in cluster.dependencies
    # GKE needs the key in the cluster's location (its region, for a zonal cluster the zone's region).
    location = cluster.inputs["location"]
    assert location == ring.inputs["location"] or location.startswith(ring.inputs["location"] + "-")
    assert ring.inputs["name"].startswith(f"{cluster.inputs['name']}-secrets-")
    assert grant.inputs["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    assert grant.inputs["member"] == (
        f"serviceAccount:service-{GCP_PROJECT_NUMBER}@container-engine-robot.iam.gserviceaccount.com")


def test_gke_workload_identity_names_a_stack_specific_service_account(gke: Recording):
    (account,) = [a for a in k8s_objects(gke, "ServiceAccount")
                  if "iam.gke.io/gcp-service-account" in (a["metadata"].get("annotations") or {})]
    ksa, namespace = account["metadata"]["name"], account["metadata"]["namespace"]
    assert ksa == f"tfserving-{gke.stack}"
    members = [m.inputs["member"] for m in gke.of_type("gcp:serviceaccount/iAMMember:IAMMember")
               if m.inputs["role"] == "roles/iam.workloadIdentityUser"]
    assert members and all(m.endswith(f"[{namespace}/{ksa}]") for m in members)
