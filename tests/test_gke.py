"""The GCP platform on the mock engine: network, GKE cluster and pools, GCS bucket, Workload Identity."""

from __future__ import annotations

import json

from components.gcp.gke_cluster import kubeconfig_for
from stacks.mock_engine import Recording
from tests.conftest import k8s_object

CLUSTER, NODE_POOL = "gcp:container/cluster:Cluster", "gcp:container/nodePool:NodePool"
GPU_POOL = {"instanceTypes": ["g2-standard-8"], "gpusPerNode": 1, "minSize": 0, "desiredSize": 0, "maxSize": 5}
SYSTEM_POOL = {"instanceTypes": ["e2-standard-4"], "minSize": 1, "desiredSize": 2, "maxSize": 3}


def test_network_has_pod_and_service_ranges_and_nat(gke: Recording):
    subnet = gke.one("gcp:compute/subnetwork:Subnetwork", "network-nodes").inputs
    ranges = {r["rangeName"]: r["ipCidrRange"] for r in subnet["secondaryIpRanges"]}
    assert ranges == {"pods": "10.16.0.0/14", "services": "10.20.0.0/20"}
    assert subnet["privateIpGoogleAccess"] is True
    assert gke.one("gcp:compute/network:Network", "network-vpc").inputs["autoCreateSubnetworks"] is False
    nat = gke.one("gcp:compute/routerNat:RouterNat", "network-nat").inputs
    assert nat["sourceSubnetworkIpRangesToNat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES"


def test_cluster_is_private_with_workload_identity_and_dataplane_v2(gke: Recording):
    cluster = gke.one(CLUSTER, "gke-cluster").inputs
    assert cluster["removeDefaultNodePool"] is True
    assert cluster["releaseChannel"] == {"channel": "REGULAR"}
    assert cluster["workloadIdentityConfig"] == {"workloadPool": "example-project.svc.id.goog"}
    assert cluster["datapathProvider"] == "ADVANCED_DATAPATH"
    assert cluster["privateClusterConfig"]["enablePrivateNodes"] is True
    assert cluster["enableShieldedNodes"] is True
    assert cluster["masterAuthorizedNetworksConfig"]["cidrBlocks"][0]["cidrBlock"] == "0.0.0.0/0"
    assert cluster["masterAuth"]["clientCertificateConfig"] == {"issueClientCertificate": False}
    assert cluster["gatewayApiConfig"] == {"channel": "CHANNEL_STANDARD"}
    # gke-dev is zonal (cheaper); deletion protection only where data is protected.
    assert cluster["location"] == "us-central1-a" and cluster["deletionProtection"] is False
    assert cluster["ipAllocationPolicy"] == {"clusterSecondaryRangeName": "pods",
                                             "servicesSecondaryRangeName": "services"}


def test_regional_protected_cluster(plan_with):
    rec = plan_with("gke-dev", regionalCluster=True, zones=["us-central1-a", "us-central1-b", "us-central1-c"],
                    protect=True, bucketForceDestroy=False, endpointPublicAccess=False,
                    apiAccessCidrs=["10.0.0.0/16"], nodePools={"system": {**SYSTEM_POOL, "desiredSize": 3}, "gpu": GPU_POOL})
    cluster = rec.one(CLUSTER, "gke-cluster")
    assert cluster.inputs["location"] == "us-central1"
    assert cluster.inputs["nodeLocations"] == ["us-central1-a", "us-central1-b", "us-central1-c"]
    assert cluster.inputs["deletionProtection"] is True and cluster.protect
    assert cluster.inputs["privateClusterConfig"]["enablePrivateEndpoint"] is True
    # A private endpoint is reached only from the authorized networks: apiAccessCidrs, no public range.
    assert [b["cidrBlock"] for b in cluster.inputs["masterAuthorizedNetworksConfig"]["cidrBlocks"]] == ["10.0.0.0/16"]
    # The initial count is per zone: 3 nodes over 3 zones is 1 per zone.
    assert rec.one(NODE_POOL, "gke-system").inputs["initialNodeCount"] == 1
    bucket = rec.one("gcp:storage/bucket:Bucket", "models")
    assert bucket.protect and bucket.retain_on_delete and bucket.inputs["forceDestroy"] is False


def test_gpu_pool_has_accelerators_autoscaling_and_spot(gke: Recording):
    pool = gke.one(NODE_POOL, "gke-gpu").inputs
    config = pool["nodeConfig"]
    (accelerator,) = config["guestAccelerators"]
    assert (accelerator["type"], accelerator["count"]) == ("nvidia-l4", 1)
    assert accelerator["gpuDriverInstallationConfig"] == {"gpuDriverVersion": "LATEST"}
    assert "gpuSharingConfig" not in accelerator
    assert pool["autoscaling"]["totalMinNodeCount"] == 0 and pool["autoscaling"]["totalMaxNodeCount"] == 5
    assert config["spot"] is True and config["machineType"] == "g2-standard-8"
    assert config["labels"]["tfplatform.io/node-pool"] == "gpu"
    assert config["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    assert config["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableIntegrityMonitoring": True}
    assert gke.one(NODE_POOL, "gke-gpu").ignore_changes == ["initialNodeCount"]
    system = gke.one(NODE_POOL, "gke-system").inputs["nodeConfig"]
    assert "guestAccelerators" not in system and system["spot"] is False


def test_n1_t4_pool_with_time_sharing(plan_with):
    rec = plan_with("gke-dev", nodePools={"system": SYSTEM_POOL, "gpu": {
        "instanceTypes": ["n1-standard-8"], "acceleratorType": "nvidia-tesla-t4", "gpusPerNode": 2,
        "gpuTimeSlicing": 2, "gpuDriverVersion": "DEFAULT", "minSize": 0, "desiredSize": 0, "maxSize": 2}})
    (accelerator,) = rec.one(NODE_POOL, "gke-gpu").inputs["nodeConfig"]["guestAccelerators"]
    assert (accelerator["type"], accelerator["count"]) == ("nvidia-tesla-t4", 2)
    assert accelerator["gpuSharingConfig"] == {"gpuSharingStrategy": "TIME_SHARING", "maxSharedClientsPerGpu": 2}
    assert accelerator["gpuDriverInstallationConfig"] == {"gpuDriverVersion": "DEFAULT"}


def test_nodes_run_as_a_least_privilege_service_account(gke: Recording):
    roles = {r.inputs["role"] for r in gke.of_type("gcp:projects/iAMMember:IAMMember")}
    assert "roles/editor" not in roles and "roles/owner" not in roles
    assert {"roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/artifactregistry.reader"} <= roles
    email = gke.one("gcp:serviceaccount/account:Account", "gke-nodes").inputs["accountId"]
    assert gke.one(NODE_POOL, "gke-gpu").inputs["nodeConfig"]["serviceAccount"].startswith(email)


def test_kubeconfig_uses_the_gke_auth_plugin(gke: Recording):
    kubeconfig = json.loads(kubeconfig_for("c", "203.0.113.7", "Q0E="))
    (user,) = kubeconfig["users"]
    assert user["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"
    assert "token" not in user["user"] and "client-certificate-data" not in user["user"]
    assert kubeconfig["clusters"][0]["cluster"] == {"server": "https://203.0.113.7",
                                                    "certificate-authority-data": "Q0E="}
    provider = gke.one("pulumi:providers:kubernetes", "gke-k8s").inputs
    assert provider["kubeconfig"] == "[secret]" and gke.outputs["kubeconfig"] == "[secret]"
    assert provider["enableConfigMapMutable"] in (True, "true")


def test_bucket_is_private_versioned_and_expires_old_versions(gke: Recording):
    bucket = gke.one("gcp:storage/bucket:Bucket", "models").inputs
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["publicAccessPrevention"] == "enforced"
    assert bucket["versioning"] == {"enabled": True}
    rules = {r["action"]["type"]: r["condition"] for r in bucket["lifecycleRules"]}
    assert rules["Delete"]["daysSinceNoncurrentTime"] == 30
    assert "AbortIncompleteMultipartUpload" in rules
    assert bucket["forceDestroy"] is True and "encryption" not in bucket
    assert gke.outputs["modelsUri"] == f"gs://{gke.outputs['modelBucket']}/models"


def test_cmek_lets_the_storage_agent_use_the_key(plan_with):
    key = "projects/example-project/locations/us-central1/keyRings/models/cryptoKeys/models"
    rec = plan_with("gke-dev", modelBucketKmsKey=key)
    bucket = rec.one("gcp:storage/bucket:Bucket", "models")
    assert bucket.inputs["encryption"] == {"defaultKmsKeyName": key}
    grant = rec.one("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember", "models-cmek")
    assert grant.inputs["member"].endswith("@gs-project-accounts.iam.gserviceaccount.com")
    assert grant.urn in bucket.dependencies


def test_workload_identity_binds_only_the_serving_account(gke: Recording):
    binding = gke.one("gcp:serviceaccount/iAMMember:IAMMember", "model-reader-workload-identity").inputs
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert binding["member"] == "serviceAccount:example-project.svc.id.goog[serving/tfserving-gke-dev]"
    read = gke.one("gcp:storage/bucketIAMMember:BucketIAMMember", "model-reader-read").inputs
    assert read["role"] == "roles/storage.objectViewer"
    assert "/objects/models/" in read["condition"]["expression"]
    account = k8s_object(gke, "ServiceAccount", "tfserving-gke-dev")
    assert account["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": gke.outputs["modelReaderServiceAccount"]}


def test_serving_on_gke_reads_gs_and_tolerates_gke_gpu_taint(gke: Recording):
    spec = k8s_object(gke, "Deployment", "tfserving-default")["spec"]["template"]["spec"]
    init = spec["initContainers"][0]
    assert init["image"].startswith("gcr.io/google.com/cloudsdktool/google-cloud-cli:")
    assert {"name": "MODEL_SOURCE_URI", "value": gke.outputs["modelsUri"]} in init["env"]
    # GKE taints GPU nodes nvidia.com/gpu=present:NoSchedule; the toleration matches any value.
    (toleration,) = spec["tolerations"]
    assert toleration == {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert spec["nodeSelector"] == {"tfplatform.io/node-pool": "gpu"}
    # No device plugin or driver installer is deployed by us on GKE: GKE manages both. The one DaemonSet is
    # the model cache's directory prep (components/serving/model_cache.py).
    daemonsets = [r.inputs["metadata"]["name"] for r in gke.resources if r.inputs.get("kind") == "DaemonSet"]
    assert daemonsets == ["model-cache-prep"]


def test_gke_network_policy_allows_the_metadata_server_for_workload_identity(gke: Recording, dev: Recording):
    egress = k8s_object(gke, "NetworkPolicy", "tfserving-default-allow")["spec"]["egress"]
    allowed = {(e["to"][0]["ipBlock"]["cidr"], e["ports"][0]["port"]) for e in egress if "ipBlock" in e["to"][0]}
    assert {("169.254.169.254/32", 80), ("169.254.169.252/32", 988)} <= allowed
    aws_egress = k8s_object(dev, "NetworkPolicy", "tfserving-default-allow")["spec"]["egress"]
    assert not any(e["to"][0].get("ipBlock", {}).get("cidr") == "169.254.169.254/32" for e in aws_egress)


def test_gcp_resources_use_the_explicit_provider(gke: Recording):
    provider = gke.one("pulumi:providers:gcp", "gcp")
    assert provider.inputs["project"] == "example-project" and provider.inputs["region"] == "us-central1"
    for res in gke.resources:
        if res.custom and res.type.startswith("gcp:"):
            assert res.provider.startswith(provider.urn + "::"), res.name
    assert not [r for r in gke.resources if r.type.startswith("aws:")]


# Survivors of the first mutation run (issue 20): fields only the snapshots looked at.

def test_node_pools_hide_the_legacy_metadata_endpoints(gke: Recording):
    for pool in ("gke-system", "gke-gpu"):
        assert gke.one(NODE_POOL, pool).inputs["nodeConfig"]["metadata"] == {"disable-legacy-endpoints": "true"}, \
            f"{pool}: the v0.1/v1beta1 metadata endpoints would hand pods the node's credentials"


def test_the_secrets_key_ring_name_keeps_its_suffix_length(gke: Recording):
    # A KMS key ring cannot be deleted: its name is a RandomId suffix, and any change to the RandomId's
    # inputs replaces it, hence a new ring, key and a re-encryption of the cluster's Secrets.
    assert gke.one("random:index/randomId:RandomId", "gke-secrets-ring").inputs == {"byteLength": 2}


def test_network_denies_all_other_ingress(gke: Recording):
    deny = gke.one("gcp:compute/firewall:Firewall", "network-deny-ingress").inputs
    assert (deny["direction"], deny["priority"], deny["sourceRanges"], deny["denies"]) == \
        ("INGRESS", 65534, ["0.0.0.0/0"], [{"protocol": "all"}])


def test_kubeconfig_context_names_its_cluster_and_user():
    kubeconfig = json.loads(kubeconfig_for("c", "203.0.113.7", "Q0E="))
    (context,) = [c for c in kubeconfig["contexts"] if c["name"] == kubeconfig["current-context"]]
    assert context["context"] == {"cluster": "c", "user": "c"}
    assert [c["name"] for c in kubeconfig["clusters"]] == [u["name"] for u in kubeconfig["users"]] == ["c"]


def test_noncurrent_versions_expire_once_archived(gke: Recording):
    rules = gke.one("gcp:storage/bucket:Bucket", "models").inputs["lifecycleRules"]
    assert {"action": {"type": "Delete"}, "condition": {"withState": "ARCHIVED", "daysSinceNoncurrentTime": 30}} \
        in rules, "without withState ARCHIVED the rule would also delete live objects 30 days old"


def test_publisher_members_may_only_impersonate_or_federate(plan_with):
    rec = plan_with("gke-dev", modelPublisherMembers=[
        "user:alice@example.com",
        "principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/ci/attribute.repository/o/r"])
    roles = {r.inputs["member"].split(":")[0]: r.inputs["role"] for r in rec.resources
             if r.type == "gcp:serviceaccount/iAMMember:IAMMember" and "publisher" in r.name}
    assert roles == {"user": "roles/iam.serviceAccountTokenCreator",
                     "principalSet": "roles/iam.workloadIdentityUser"}
