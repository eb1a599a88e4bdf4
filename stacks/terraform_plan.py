"""The offline plan's cloud resources as a Terraform-plan JSON, so checkov can judge them.

Pulumi's ``aws``, ``gcp`` and ``random`` providers are bridged from the Terraform providers: every
resource the mock engine records (:class:`stacks.mock_engine.Recording`) is a Terraform resource
under another name, with its arguments in camelCase. :func:`to_terraform_plan` writes them the way
``terraform show -json`` shows a plan that creates everything (``planned_values`` plus
``resource_changes``, and a ``configuration`` holding every argument as written, with the
references between resources), which ``checkov -f plan.json --framework terraform_plan`` and
``trivy config`` (its ``terraformplan-json`` scanner) read.

Resource types (:data:`TERRAFORM_TYPES`)
    The table lists every token the dev, prod and gke-dev plans record, checked against the
    Terraform registry names. It follows a rule (:func:`general_rule`):
    ``<pkg>:<module>/<member>:<Class>`` -> ``<tf provider>_<module>_<snake(Class)>``, where
    the provider prefix comes from :data:`PROVIDER_PREFIX` (``gcp`` is ``google``); the module is
    dropped for ``aws:ec2`` and every ``index`` module (``aws_vpc``); a class named after its
    package is not prefixed twice (``random:index/randomPassword:RandomPassword`` ->
    ``random_password``); :data:`MODULE_RENAMES` renames modules (``gcp:projects`` -> ``project``,
    ``gcp:serviceaccount`` -> ``service_account``); and :data:`TYPE_EXCEPTIONS` lists where Pulumi
    renamed the class (``aws:autoscaling/tag:Tag`` -> ``aws_autoscaling_group_tag``). A token
    missing from the table is not guessed: it is listed under ``plan["pulumi"]["unmapped"]`` (and
    reported by the scan), so a new resource type shows up instead of silently escaping the checks.

Attributes (:func:`terraform_values`)
    * Keys: camelCase -> snake_case (``endpointPublicAccess`` -> ``endpoint_public_access``,
      ``masterIpv4CidrBlock`` -> ``master_ipv4_cidr_block``), recursively, except inside maps.
    * Shape rule: a Pulumi object is a Terraform nested block, and Terraform writes every nested
      block (even ``max_items = 1``) as a list of objects: ``vpcConfig: {...}`` ->
      ``vpc_config: [{...}]``. A Pulumi list of objects is a repeated block and stays a list.
    * Exception 1, maps (:data:`MAP_ATTRIBUTES`): ``tags``, ``labels``, ``resourceLabels``,
      ``metadata`` ... are Terraform ``map(string)`` attributes: they stay objects and their keys
      (``kubernetes.io/role/elb``) are not touched.
    * Exception 2, names (:data:`ATTRIBUTE_RENAMES`): Pulumi pluralises list arguments whose
      Terraform name is singular, repeated blocks (``taints`` -> ``taint``, ``lifecycleRules`` ->
      ``lifecycle_rule``, ``nodeConfig.guestAccelerators`` -> ``guest_accelerator``) and a few
      plain lists (``clientIdLists`` -> ``client_id_list``). A plural list of objects that is in
      neither that table nor :data:`PLURAL_NAMES_KEPT` (Terraform's name is plural too,
      ``block_device_mappings``) is reported under ``mapping_problems``; plain lists cannot be
      told apart that way (``subnetIds`` is ``subnet_ids``), so new ones need a look.
    * Unknown values (``pulumi.runtime.rpc.UNKNOWN``, none offline today) are left out and marked
      in ``after_unknown``, as Terraform does.
    * Strings holding JSON (IAM and bucket policies, add-on ``configuration_values``) stay strings,
      as in Terraform; checkov parses the policy ones itself.
    * References: a top-level argument whose value is the id, ARN, name ... of a resource it
      depends on (``bucket = aws_s3_bucket.models.id``) is unknown until apply in a real plan:
      it is left out of ``planned_values``, marked in ``after_unknown``, and written as a
      reference in ``configuration``. checkov builds its graph edges from those references (e.g.
      CKV2_AWS_6 connects the public access block to its bucket). Nested values are kept as they
      are in ``planned_values`` (checks such as CKV_AWS_58 read the key ARN there) and are written
      as references in ``configuration`` as well.

Configuration (:func:`configuration_expressions`)
    ``configuration.root_module.resources[].expressions`` holds EVERY argument the program set, in
    Terraform's format (https://developer.hashicorp.com/terraform/internals/json-format,
    "Expression Representation" and "Block Expressions Representation"): an attribute is
    ``{"constant_value": v}`` or ``{"references": [...]}``, a nested block is a list with one
    block-expressions object per block. That is the only place a plan tells nested blocks from
    attributes: trivy rebuilds HCL from ``planned_values`` using it, and without it reads a block
    of blocks (``encryption_config.provider``, ``rule.apply_server_side_encryption_by_default``,
    ``master_authorized_networks_config.cidr_blocks``) as an opaque attribute
    (aquasecurity/trivy pkg/iac/scanners/terraformplan/tfjson/parser/parser.go,
    ``appendBlockOrAttribute`` vs ``decodeNestedBlocks``). Computed values the provider adds
    (``tags_all``, ``effective_labels``) are not configuration and are left out, as Terraform does.

Determinism
    :func:`write_terraform_plan` writes sorted keys, and references follow the order of the value
    they come from (not the order Pulumi recorded the dependencies in, which varies between runs),
    so two runs of the same program write byte-identical files.
    * Provider defaults: the aws provider's ``defaultTags`` are merged into ``tags_all`` and the
      gcp provider's ``defaultLabels`` into ``effective_labels``/``terraform_labels``, as Terraform
      plans show them.

Addresses are ``<tf_type>.<pulumi name>`` with characters Terraform does not allow in a name
replaced by ``_`` (a second resource of the same type and name gets ``_2``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from pulumi.runtime import mocks, rpc

from stacks.mock_engine import PlanMocks, Recording, RecordedResource

TERRAFORM_VERSION = "1.9.8"

PROVIDER_PREFIX = {"aws": "aws", "gcp": "google", "random": "random"}
PROVIDER_SOURCE = {"aws": "registry.terraform.io/hashicorp/aws",
                   "gcp": "registry.terraform.io/hashicorp/google",
                   "random": "registry.terraform.io/hashicorp/random"}
# Modules whose name is not part of the Terraform type (``aws:ec2/vpc:Vpc`` -> ``aws_vpc``).
MODULES_DROPPED = {("aws", "ec2"), ("aws", "index"), ("gcp", "index"), ("random", "index")}
MODULE_RENAMES = {("gcp", "projects"): "project", ("gcp", "serviceaccount"): "service_account",
                  ("gcp", "artifactregistry"): "artifact_registry"}
# Where Pulumi's class name is not the snake_case of the Terraform type's last part.
TYPE_EXCEPTIONS = {
    # Pulumi spells "OpenId", Terraform "openid".
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": "aws_iam_openid_connect_provider",
    # One tag of an Auto Scaling group (Pulumi shortened the class name).
    "aws:autoscaling/tag:Tag": "aws_autoscaling_group_tag",
    # The module is the type: google_service_account (not ..._account_account).
    "gcp:serviceaccount/account:Account": "google_service_account",
}

# Every cloud resource type the dev, prod and gke-dev plans record (tests/test_scan.py keeps this
# complete and checks each entry against the rule and the exceptions above).
TERRAFORM_TYPES: dict[str, str] = {
    # AWS: network
    "aws:ec2/vpc:Vpc": "aws_vpc",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": "aws_default_security_group",
    "aws:ec2/subnet:Subnet": "aws_subnet",
    "aws:ec2/internetGateway:InternetGateway": "aws_internet_gateway",
    "aws:ec2/eip:Eip": "aws_eip",
    "aws:ec2/natGateway:NatGateway": "aws_nat_gateway",
    "aws:ec2/routeTable:RouteTable": "aws_route_table",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "aws_route_table_association",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "aws_vpc_endpoint",
    "aws:ec2/securityGroup:SecurityGroup": "aws_security_group",
    "aws:ec2/launchTemplate:LaunchTemplate": "aws_launch_template",
    "aws:ec2/flowLog:FlowLog": "aws_flow_log",
    # AWS: EKS
    "aws:eks/cluster:Cluster": "aws_eks_cluster",
    "aws:eks/nodeGroup:NodeGroup": "aws_eks_node_group",
    "aws:eks/addon:Addon": "aws_eks_addon",
    "aws:eks/accessEntry:AccessEntry": "aws_eks_access_entry",
    "aws:eks/accessPolicyAssociation:AccessPolicyAssociation": "aws_eks_access_policy_association",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "aws_vpc_security_group_ingress_rule",
    "aws:autoscaling/tag:Tag": "aws_autoscaling_group_tag",
    "aws:cloudwatch/logGroup:LogGroup": "aws_cloudwatch_log_group",
    "aws:eks/podIdentityAssociation:PodIdentityAssociation": "aws_eks_pod_identity_association",
    # AWS: Karpenter's interruption queue and the EventBridge rules feeding it
    "aws:sqs/queue:Queue": "aws_sqs_queue",
    "aws:sqs/queuePolicy:QueuePolicy": "aws_sqs_queue_policy",
    "aws:cloudwatch/eventRule:EventRule": "aws_cloudwatch_event_rule",
    "aws:cloudwatch/eventTarget:EventTarget": "aws_cloudwatch_event_target",
    # AWS: IAM and KMS
    "aws:iam/instanceProfile:InstanceProfile": "aws_iam_instance_profile",
    "aws:iam/role:Role": "aws_iam_role",
    "aws:iam/rolePolicy:RolePolicy": "aws_iam_role_policy",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": "aws_iam_role_policy_attachment",
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": "aws_iam_openid_connect_provider",
    "aws:kms/key:Key": "aws_kms_key",
    "aws:kms/alias:Alias": "aws_kms_alias",
    # AWS: model bucket
    "aws:s3/bucket:Bucket": "aws_s3_bucket",
    "aws:s3/bucketPolicy:BucketPolicy": "aws_s3_bucket_policy",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "aws_s3_bucket_public_access_block",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": "aws_s3_bucket_ownership_controls",
    "aws:s3/bucketVersioning:BucketVersioning": "aws_s3_bucket_versioning",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
        "aws_s3_bucket_server_side_encryption_configuration",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration":
        "aws_s3_bucket_lifecycle_configuration",
    "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration":
        "aws_s3_bucket_object_lock_configuration",
    # AWS: the global name of the multi-region stacks (global/)
    "aws:route53/healthCheck:HealthCheck": "aws_route53_health_check",
    "aws:route53/record:Record": "aws_route53_record",
    # GCP: network
    "gcp:compute/network:Network": "google_compute_network",
    "gcp:compute/subnetwork:Subnetwork": "google_compute_subnetwork",
    "gcp:compute/router:Router": "google_compute_router",
    "gcp:compute/firewall:Firewall": "google_compute_firewall",
    "gcp:compute/routerNat:RouterNat": "google_compute_router_nat",
    # GCP: GKE
    "gcp:container/cluster:Cluster": "google_container_cluster",
    "gcp:container/nodePool:NodePool": "google_container_node_pool",
    # GCP: IAM
    "gcp:serviceaccount/account:Account": "google_service_account",
    "gcp:serviceaccount/iAMMember:IAMMember": "google_service_account_iam_member",
    "gcp:projects/iAMMember:IAMMember": "google_project_iam_member",
    # GCP: the Docker Hub mirror (Artifact Registry remote repository)
    "gcp:artifactregistry/repository:Repository": "google_artifact_registry_repository",
    # GCP: model bucket
    "gcp:storage/bucket:Bucket": "google_storage_bucket",
    "gcp:storage/bucketIAMMember:BucketIAMMember": "google_storage_bucket_iam_member",
    # GCP: Cloud KMS (the GKE application-layer secrets key)
    "gcp:kms/keyRing:KeyRing": "google_kms_key_ring",
    "gcp:kms/cryptoKey:CryptoKey": "google_kms_crypto_key",
    "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember": "google_kms_crypto_key_iam_member",
    # The CI bootstrap (bootstrap/, scanned by tests/test_state_backend.py): GitHub's workload identity
    # federation, authoritative IAM bindings, the state buckets' access logging and Data Access logs.
    "aws:s3/bucketLogging:BucketLogging": "aws_s3_bucket_logging",
    "gcp:iam/workloadIdentityPool:WorkloadIdentityPool": "google_iam_workload_identity_pool",
    "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider":
        "google_iam_workload_identity_pool_provider",
    "gcp:kms/cryptoKeyIAMBinding:CryptoKeyIAMBinding": "google_kms_crypto_key_iam_binding",
    "gcp:projects/iAMAuditConfig:IAMAuditConfig": "google_project_iam_audit_config",
    "gcp:serviceaccount/iAMBinding:IAMBinding": "google_service_account_iam_binding",
    "gcp:storage/bucketIAMBinding:BucketIAMBinding": "google_storage_bucket_iam_binding",
    # random (the Grafana admin password, the GKE key ring's suffix; no cloud checks, mapped so nothing
    # is left out)
    "random:index/randomPassword:RandomPassword": "random_password",
    "random:index/randomId:RandomId": "random_id",
}

# Pulumi objects that are Terraform maps (not nested blocks): kept as objects, keys untouched.
MAP_ATTRIBUTES = frozenset({"tags", "tagsAll", "labels", "resourceLabels", "metadata", "userLabels",
                            "effectiveLabels", "terraformLabels", "attributeMapping"})

# Pulumi plural names of repeated blocks whose Terraform name is singular, per Terraform type.
# Keys are the Pulumi key path as recorded (dots between levels, list items left out).
ATTRIBUTE_RENAMES: dict[str, dict[str, str]] = {
    "aws_eks_node_group": {"taints": "taint"},
    "aws_route_table": {"routes": "route"},
    "aws_route53_record": {"failoverRoutingPolicies": "failover_routing_policy",
                           "latencyRoutingPolicies": "latency_routing_policy"},
    "aws_iam_openid_connect_provider": {"clientIdLists": "client_id_list"},
    "aws_s3_bucket_lifecycle_configuration": {"rules": "rule"},
    "aws_s3_bucket_server_side_encryption_configuration": {"rules": "rule"},
    "google_compute_subnetwork": {"secondaryIpRanges": "secondary_ip_range"},
    "google_compute_firewall": {"denies": "deny", "allows": "allow"},
    "google_storage_bucket": {"lifecycleRules": "lifecycle_rule"},
    "google_project_iam_audit_config": {"auditLogConfigs": "audit_log_config"},
    "google_container_cluster": {"nodeConfig.guestAccelerators": "guest_accelerator",
                                 "nodeConfig.taints": "taint"},
    "google_container_node_pool": {"nodeConfig.guestAccelerators": "guest_accelerator",
                                   "nodeConfig.taints": "taint"},
}
# Plural lists of blocks whose Terraform name is plural as well (reviewed: no rename).
PLURAL_NAMES_KEPT: dict[str, frozenset[str]] = {
    "aws_launch_template": frozenset({"blockDeviceMappings", "tagSpecifications"}),
    "google_container_cluster": frozenset({"masterAuthorizedNetworksConfig.cidrBlocks",
                                           # cluster_autoscaling.resource_limits: a repeated block, plural in
                                           # terraform-provider-google resource_container_cluster.go too.
                                           "clusterAutoscaling.resourceLimits"}),
    "google_container_node_pool": frozenset({"nodeConfig.secondaryBootDisks"}),
}

# State attributes of a resource that other resources refer to (``aws_s3_bucket.models.id``).
_REFERENCE_ATTRIBUTES = ("id", "arn", "name", "bucket", "keyId", "email", "member", "selfLink", "url")
_MIN_REFERENCE_LENGTH = 6  # shorter values ("vpc", "1") are not taken for references


def snake(name: str) -> str:
    """camelCase (or PascalCase, with acronyms: ``BucketIAMMember``) -> snake_case."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def general_rule(token: str) -> str:
    """The Terraform type a token maps to by the rule alone (see the module docstring)."""
    package, middle, cls = token.split(":")
    module = middle.split("/")[0]
    prefix = PROVIDER_PREFIX.get(package, package)
    parts = [prefix]
    if (package, module) not in MODULES_DROPPED:
        parts.append(MODULE_RENAMES.get((package, module), module.lower()))
    name = snake(cls)
    if len(parts) == 1 and name.startswith(f"{prefix}_"):
        name = name[len(prefix) + 1:]  # random's classes repeat the package: RandomPassword
    parts.append(name)
    return "_".join(parts)


def terraform_type(token: str) -> str | None:
    """The Terraform type of a Pulumi type token, or None when the table does not know it."""
    return TERRAFORM_TYPES.get(token)


def is_cloud_resource(resource: RecordedResource) -> bool:
    """Custom resources of the Terraform-bridged providers (not providers, components, Kubernetes)."""
    package = resource.type.split(":")[0]
    return resource.custom and package in PROVIDER_PREFIX


def terraform_values(tf_type: str, inputs: dict[str, Any],
                     problems: list[str] | None = None) -> dict[str, Any]:
    """Pulumi wire-form inputs -> Terraform attribute values (key names and block shapes)."""
    problems = problems if problems is not None else []
    return {_tf_key(tf_type, key, key): _convert(tf_type, key, value, problems)
            for key, value in inputs.items()}


def _tf_key(tf_type: str, path: str, key: str) -> str:
    return ATTRIBUTE_RENAMES.get(tf_type, {}).get(path) or snake(key)


def _convert(tf_type: str, path: str, value: Any, problems: list[str]) -> Any:
    key = path.rsplit(".", 1)[-1]
    if isinstance(value, dict):
        if key in MAP_ATTRIBUTES:
            return dict(value)
        odd = [k for k in value if not re.fullmatch(r"[a-z][A-Za-z0-9]*", k)]
        if odd:
            problems.append(f"{tf_type}: {path} looks like a map (keys {odd}), not a block: add it "
                            "to MAP_ATTRIBUTES")
            return dict(value)
        return [_block(tf_type, path, value, problems)]
    if isinstance(value, list):
        if any(isinstance(v, dict) for v in value):
            if (key.endswith("s") and path not in ATTRIBUTE_RENAMES.get(tf_type, {})
                    and path not in PLURAL_NAMES_KEPT.get(tf_type, frozenset())):
                problems.append(f"{tf_type}: repeated block {path} has a plural name: add its "
                                "Terraform name to ATTRIBUTE_RENAMES (or PLURAL_NAMES_KEPT)")
            return [_block(tf_type, path, v, problems) if isinstance(v, dict) else v for v in value]
        return list(value)
    return value


def _block(tf_type: str, path: str, block: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    return {_tf_key(tf_type, f"{path}.{k}", k): _convert(tf_type, f"{path}.{k}", v, problems)
            for k, v in block.items()}


def _address_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    return safe if re.match(r"[A-Za-z_]", safe) else f"_{safe}"


def _identities(resource: RecordedResource) -> dict[str, str]:
    """Value -> attribute for what other resources may hold of this one (its id, ARN, name ...).

    The values come from the same mock that answered the program (``PlanMocks``), so they are
    exactly the strings the dependent resources recorded.
    """
    resource_id, state = PlanMocks().new_resource(mocks.MockResourceArgs(
        typ=resource.type, name=resource.name, inputs=dict(resource.inputs), custom=True))
    found = {resource_id: "id"}
    for attr in _REFERENCE_ATTRIBUTES[1:]:
        value = state.get(attr)
        # An echoed input is not this resource's identity (a public access block's ``bucket`` is
        # the bucket's), except its own ``name`` (``aws_eks_cluster.x.name``).
        if attr != "name" and attr in resource.inputs:
            continue
        if isinstance(value, str) and len(value) >= _MIN_REFERENCE_LENGTH:
            found.setdefault(value, snake(attr))
    return found


def _provider_defaults(recording: Recording) -> dict[str, dict[str, Any]]:
    """Provider URN prefix -> its region, default tags (aws) or default labels (gcp)."""
    defaults: dict[str, dict[str, Any]] = {}
    for r in recording.resources:
        if not r.type.startswith("pulumi:providers:"):
            continue
        settings: dict[str, Any] = {}
        for key in ("region", "project"):
            if isinstance(r.inputs.get(key), str):
                settings[key] = r.inputs[key]
        try:
            if r.type == "pulumi:providers:aws" and r.inputs.get("defaultTags"):
                settings["default_tags"] = json.loads(r.inputs["defaultTags"]).get("tags") or {}
            if r.type == "pulumi:providers:gcp" and r.inputs.get("defaultLabels"):
                settings["default_labels"] = json.loads(r.inputs["defaultLabels"]) or {}
        except (TypeError, ValueError):
            pass
        defaults[r.urn] = {"package": r.type.split(":")[2], "name": r.name, **settings}
    return defaults


def _provider_of(resource: RecordedResource, defaults: dict[str, dict[str, Any]]) -> dict[str, Any]:
    urn = resource.provider.rsplit("::", 1)[0] if resource.provider else ""
    return defaults.get(urn, {})


def to_terraform_plan(recording: Recording) -> dict[str, Any]:
    """The recording's cloud resources as ``terraform show -json`` would show a create-all plan.

    Besides Terraform's keys the result holds ``pulumi``: the stack, ``addresses`` (Terraform
    address -> Pulumi URN), ``unmapped`` (Pulumi type -> names of resources not in the type table,
    left out of the plan) and ``mapping_problems`` (shapes the attribute tables do not cover).
    checkov ignores that key.
    """
    defaults = _provider_defaults(recording)
    cloud = [r for r in recording.resources if is_cloud_resource(r)]
    by_urn = {r.urn: r for r in cloud}
    unmapped: dict[str, list[str]] = {}
    problems: list[str] = []
    addresses: dict[str, str] = {}  # urn -> address
    taken: set[str] = set()
    for r in sorted(cloud, key=lambda r: r.urn):
        tf_type = terraform_type(r.type)
        if tf_type is None:
            unmapped.setdefault(r.type, []).append(r.name)
            continue
        name = base = _address_name(r.name)
        n = 1
        while f"{tf_type}.{name}" in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(f"{tf_type}.{name}")
        addresses[r.urn] = f"{tf_type}.{name}"

    identities = {urn: _identities(by_urn[urn]) for urn in addresses}
    planned, changes, configuration, provider_config = [], [], [], {}
    for r in sorted((by_urn[u] for u in addresses), key=lambda r: addresses[r.urn]):
        address = addresses[r.urn]
        tf_type, name = address.split(".", 1)
        package = r.type.split(":")[0]
        values = terraform_values(tf_type, r.inputs, problems)

        def references(value: Any, resource: RecordedResource = r) -> list[str]:
            return _references(value, resource, addresses, identities)

        # What the program wrote: before the provider adds its computed defaults (tags_all ...).
        expressions = configuration_expressions(values, references)
        provider = _provider_of(r, defaults)
        _apply_provider_defaults(package, values, provider)

        unknown: dict[str, Any] = {}
        for key in list(values):
            value = values[key]
            if value == rpc.UNKNOWN:
                del values[key]
                unknown[key] = True
                continue
            if isinstance(value, str) and references(value):
                # Unknown until the referenced resource exists, as Terraform plans it.
                del values[key]
                unknown[key] = True

        provider_key = PROVIDER_PREFIX[package]
        if provider.get("name") and not provider["name"].startswith("default"):
            provider_key = f"{provider_key}.{_address_name(provider['name'])}"
        if provider.get("region") or provider.get("project"):
            provider_config.setdefault(provider_key, {
                "name": PROVIDER_PREFIX[package], "full_name": PROVIDER_SOURCE[package],
                **({"alias": _address_name(provider["name"])} if "." in provider_key else {}),
                "expressions": {k: {"constant_value": provider[k]} for k in ("region", "project")
                                if provider.get(k)}})
        planned.append({"address": address, "mode": "managed", "type": tf_type, "name": name,
                        "provider_name": PROVIDER_SOURCE[package], "schema_version": 0,
                        "values": values, "sensitive_values": {}})
        changes.append({"address": address, "mode": "managed", "type": tf_type, "name": name,
                        "provider_name": PROVIDER_SOURCE[package],
                        "change": {"actions": ["create"], "before": None, "after": values,
                                   "after_unknown": unknown, "before_sensitive": False,
                                   "after_sensitive": {}}})
        configuration.append({"address": address, "mode": "managed", "type": tf_type, "name": name,
                              "provider_config_key": provider_key, "expressions": expressions,
                              "schema_version": 0})

    return {
        "format_version": "1.2",
        "terraform_version": TERRAFORM_VERSION,
        "planned_values": {"root_module": {"resources": planned}},
        "resource_changes": changes,
        "configuration": {"provider_config": provider_config,
                          "root_module": {"resources": configuration}},
        "pulumi": {"stack": recording.stack, "project": recording.project,
                   "addresses": {addresses[u]: u for u in sorted(addresses, key=addresses.get)},
                   "unmapped": {t: sorted(names) for t, names in sorted(unmapped.items())},
                   "mapping_problems": sorted(set(problems))},
    }


def _apply_provider_defaults(package: str, values: dict[str, Any], provider: dict[str, Any]) -> None:
    if package == "aws" and "tags" in values:
        values["tags_all"] = {**provider.get("default_tags", {}), **(values.get("tags") or {})}
    if package == "gcp":
        for key in ("labels", "resource_labels"):
            if key in values:
                merged = {**provider.get("default_labels", {}), **(values.get(key) or {})}
                values["effective_labels"] = merged
                values["terraform_labels"] = merged


def _references(value: Any, resource: RecordedResource, addresses: dict[str, str],
                identities: dict[str, dict[str, str]]) -> list[str]:
    """Terraform references (``aws_s3_bucket.models.id``, ``aws_s3_bucket.models``) in a value.

    In the order of the value's strings, as Terraform lists them (``[a.id, b.id]`` -> ``a.id, a,
    b.id, b``): the order of ``resource.dependencies`` differs between runs of the same program.
    """
    strings = [value] if isinstance(value, str) else (
        [v for v in value if isinstance(v, str)] if isinstance(value, list) else [])
    deps = sorted(dep for dep in set(resource.dependencies) if dep in addresses)
    refs: list[str] = []
    for s in strings:
        for dep in deps:
            attr = identities[dep].get(s)
            if attr:
                for ref in (f"{addresses[dep]}.{attr}", addresses[dep]):
                    if ref not in refs:
                        refs.append(ref)
    return refs


def configuration_expressions(values: dict[str, Any],
                              references: Callable[[Any], list[str]]) -> dict[str, Any]:
    """Terraform attribute values -> a block-expressions object of ``configuration``.

    ``values`` has the shapes :func:`terraform_values` gives: a list of objects is a nested block
    (repeated or not) and becomes a list of block-expressions objects, one per block; anything else
    is an attribute: ``{"references": [...]}`` when ``references(value)`` finds some (a string or
    list of strings naming another resource), else ``{"constant_value": value}``. Null and unknown
    arguments are left out, as Terraform leaves out arguments the configuration does not set.
    """
    expressions: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or value == rpc.UNKNOWN:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            expressions[key] = [configuration_expressions(block, references) for block in value]
            continue
        refs = references(value)
        expressions[key] = {"references": refs} if refs else {"constant_value": value}
    return expressions


def unmapped_types(recording: Recording) -> dict[str, list[str]]:
    """Cloud resource types of the recording the table does not map (type -> resource names)."""
    found: dict[str, list[str]] = {}
    for r in recording.resources:
        if is_cloud_resource(r) and terraform_type(r.type) is None:
            found.setdefault(r.type, []).append(r.name)
    return {t: sorted(names) for t, names in sorted(found.items())}


def write_terraform_plan(recording: Recording, path: Path) -> dict[str, Any]:
    """Write :func:`to_terraform_plan` of the recording as JSON to ``path``; returns the plan."""
    plan = to_terraform_plan(recording)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Sorted keys: Pulumi records inputs in the order its serialisation finished, which varies
    # between runs; the file is byte-identical between runs of the same program.
    path.write_text(json.dumps(plan, indent=2, sort_keys=True) + "\n")
    return plan
