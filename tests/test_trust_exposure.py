"""Issue 19, finding 6: the exposed REST API admits only the load balancer and can require authentication.

``exposure.proxyCidrs`` is admitted to the REST port from anywhere, so a range holding pod addresses (the
VPC CIDR on EKS, where the VPC CNI gives pods private-subnet addresses; podCidr on GKE) would admit every
pod. A protected stack must not publish the API without authentication at the gateway, and the policy
objects rendered for each gateway implementation must match their CRD schemas and target the Gateway.
"""

from __future__ import annotations

import copy
import json
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest

from components.aws.subnets import subnet_cidrs
from stacks.config import parse_settings
from stacks.mock_engine import run_program
from stacks.plan import ROOT
from tests.crd_validation import validate_custom_resources
from tests.test_settings import NS, assert_config_error, raw, stack_raw

EXPOSURE = {"enabled": True, "gatewayClassName": "eg", "hostname": "models.example.com",
            "tlsSecretName": "models-tls"}
JWT = {"issuer": "https://issuer.example.com", "jwksUri": "https://issuer.example.com/.well-known/jwks.json",
       "audiences": ["models"]}
ENVOY_SCHEMA = Path(__file__).parent / "crd_validator" / "schemas" / "envoy-gateway-v1.9.0-securitypolicy.json"


def exposed(cloud: str = "aws", **exposure: object) -> dict[str, str]:
    if cloud == "aws":
        # A JWT policy is an object of the implementation's CRDs: the stack declares it installed.
        implementation = {"envoy-gateway": ["envoy-gateway"], "istio": ["istio"]}.get(
            str(exposure.get("gatewayImplementation")), [])
        return raw(exposure={**EXPOSURE, **exposure}, clusterPrerequisites=["gateway-api-crds", *implementation])
    return {**stack_raw("gke-dev"), **raw(exposure={**EXPOSURE, **exposure})}


# --- proxyCidrs that overlap the nodes' and pods' addresses are refused -------------------------------

AWS_PRIVATE = [private for private, _ in subnet_cidrs("10.0.0.0/16", ["us-east-1a", "us-east-1b"]).values()]
AWS_PUBLIC = [public for _, public in subnet_cidrs("10.0.0.0/16", ["us-east-1a", "us-east-1b"]).values()]


@pytest.mark.parametrize("cidr,zone,private", [
    ("10.0.0.0/16", "us-east-1a", AWS_PRIVATE[0]),   # the VPC CIDR the docs used to suggest
    ("0.0.0.0/0", "us-east-1a", AWS_PRIVATE[0]),
    ("10.0.40.0/24", "us-east-1b", AWS_PRIVATE[1]),  # inside the second zone's private subnet only
])
def test_aws_proxy_cidrs_overlapping_a_private_subnet_are_refused(cidr, zone, private):
    assert_config_error(exposed(proxyCidrs=[cidr]), f"{NS}:exposure.proxyCidrs.0", repr(cidr),
                        f"a range not overlapping the private subnet of {zone} ({private})")
    # The error names what to use instead: the public subnets, where the load balancer runs.
    assert_config_error(exposed(proxyCidrs=[cidr]), f"{NS}:exposure.proxyCidrs.0", repr(cidr), str(AWS_PUBLIC))


def test_aws_public_subnets_are_accepted_as_proxy_cidrs():
    settings = parse_settings(exposed(proxyCidrs=AWS_PUBLIC))
    assert settings.exposure.proxy_cidrs == AWS_PUBLIC == ["10.0.224.0/22", "10.0.228.0/22"]


@pytest.mark.parametrize("cidr,allowed", [
    ("10.16.0.0/16", "podCidr (10.16.0.0/14)"),   # inside the default pod range
    ("10.0.0.0/8", "podCidr (10.16.0.0/14)"),
    ("10.0.1.0/24", "vpcCidr (10.0.0.0/16)"),     # the nodes (and hostNetwork pods)
])
def test_gke_proxy_cidrs_overlapping_pod_or_node_ranges_are_refused(cidr, allowed):
    assert_config_error(exposed("gcp", proxyCidrs=[cidr]), f"{NS}:exposure.proxyCidrs.0", repr(cidr),
                        f"a range not overlapping {allowed}")


def test_gke_front_end_ranges_are_accepted():
    cidrs = ["35.191.0.0/16", "130.211.0.0/22"]
    assert parse_settings(exposed("gcp", proxyCidrs=cidrs)).exposure.proxy_cidrs == cidrs


# --- protected stacks require authentication -----------------------------------------------------------

PROD_EXPOSED = {**stack_raw("prod"), **exposed(proxyNamespaces=["envoy-gateway-system"])}


def test_protected_stack_with_anonymous_exposure_is_refused():
    assert_config_error(PROD_EXPOSED, f"{NS}:exposure.authentication", "'none'",
                        "jwt or client-certificate when protect is true")


def test_protected_stack_accepts_authentication_or_an_explained_opt_out():
    for exposure in ({"authentication": "jwt", "gatewayImplementation": "istio", "jwt": JWT},
                     {"authentication": "client-certificate", "clientCaConfigMap": "clients-ca"},
                     {"allowAnonymous": True, "anonymousReason": "public demo model, no user data"}):
        config = {**stack_raw("prod"), **exposed(proxyNamespaces=["envoy-gateway-system"], **exposure)}
        assert parse_settings(config).protect


@pytest.mark.parametrize("exposure,key,value,allowed", [
    ({"allowAnonymous": True}, "exposure.anonymousReason", "''", "a sentence saying why"),
    ({"authentication": "jwt", "gatewayImplementation": "istio"}, "exposure.jwt", "null", "issuer, jwksUri"),
    ({"authentication": "jwt", "jwt": JWT}, "exposure.gatewayImplementation", "'other'",
     "['envoy-gateway', 'istio'] for authentication jwt"),
    ({"authentication": "jwt", "gatewayImplementation": "gke", "jwt": JWT}, "exposure.gatewayImplementation",
     "'gke'", "Gateway API defines no JWT validation"),
    ({"authentication": "client-certificate"}, "exposure.clientCaConfigMap", "''", "a ConfigMap with key ca.crt"),
    ({"authentication": "client-certificate", "clientCaConfigMap": "ca", "gatewayImplementation": "gke"},
     "exposure.gatewayImplementation", "'gke'", "validates client certificates outside Gateway API"),
    ({"authentication": "jwt", "gatewayImplementation": "istio", "jwt": {**JWT, "jwksUri": "http://i/k"}},
     "exposure.jwt.jwksUri", "'http://i/k'", "an https:// URL"),
    ({"authentication": "jwt", "gatewayImplementation": "istio", "jwt": {**JWT, "audiences": []}},
     "exposure.jwt.audiences", "[]", "at least 1"),
    ({"authentication": "jwt", "gatewayImplementation": "istio", "jwt": JWT, "allowAnonymous": True,
      "anonymousReason": "x"}, "exposure.allowAnonymous", "true", "false: authentication is jwt"),
    ({"clientCaConfigMap": "ca"}, "exposure.clientCaConfigMap", "'ca'",
     "unset unless authentication is client-certificate"),
])
def test_bad_authentication_config_names_key_value_and_allowed(exposure, key, value, allowed):
    assert_config_error(exposed(proxyNamespaces=["envoy-gateway-system"], **exposure), f"{NS}:{key}", value,
                        allowed)


# --- the rendered authentication objects ---------------------------------------------------------------

PROGRAM = """
import pulumi
from components.serving.gateway import JwtIssuer, ServingGateway, ServingGatewayArgs

JWT = JwtIssuer("https://issuer.example.com", "https://issuer.example.com/.well-known/jwks.json", ["models"])
for name, auth, impl in [("gw-envoy", "jwt", "envoy-gateway"), ("gw-istio", "jwt", "istio"),
                         ("gw-mtls", "client-certificate", "other"), ("gw-none", "none", "gke")]:
    ServingGateway(name, ServingGatewayArgs(
        namespace="serving", gateway_class_name="eg", hostname="models.example.com", tls_secret_name="models-tls",
        authentication=auth, implementation=impl, jwt=JWT if auth == "jwt" else None,
        client_ca_config_map="clients-ca" if auth == "client-certificate" else ""))
"""


@pytest.fixture(scope="module")
def gateways(tmp_path_factory) -> dict[str, list[dict]]:
    program = tmp_path_factory.mktemp("gateway-program") / "__main__.py"
    program.write_text(textwrap.dedent(PROGRAM))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    recording = run_program(program, "test", "tfserving-platform", {}, [])
    by_gateway: dict[str, list[dict]] = {}
    for resource in recording.resources:
        if resource.custom and "::gw-" in resource.parent:
            by_gateway.setdefault(resource.parent.rsplit("::", 1)[1], []).append(resource.inputs)
    return by_gateway


def kinds(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objects}


def closed(schema: object) -> object:
    """The CRD schema with unknown fields refused, as the API server's pruning would drop them silently."""
    if isinstance(schema, dict):
        schema = {k: closed(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [closed(v) for v in schema]
    return schema


def envoy_errors(obj: dict) -> list[str]:
    schema = closed(json.loads(ENVOY_SCHEMA.read_text())["schema"])
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(body)]


GATEWAY_TARGET = {"group": "gateway.networking.k8s.io", "kind": "Gateway"}


def test_envoy_gateway_jwt_is_a_security_policy_on_the_gateway(gateways):
    objs = kinds(gateways["gw-envoy"])
    assert set(objs) == {"Gateway", "SecurityPolicy"}
    policy = objs["SecurityPolicy"]
    assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    assert policy["metadata"]["namespace"] == objs["Gateway"]["metadata"]["namespace"] == "serving"
    assert policy["spec"]["targetRefs"] == [{**GATEWAY_TARGET, "name": objs["Gateway"]["metadata"]["name"]}]
    (provider,) = policy["spec"]["jwt"]["providers"]
    assert provider["issuer"] == "https://issuer.example.com" and provider["audiences"] == ["models"]
    assert provider["remoteJWKS"] == {"uri": "https://issuer.example.com/.well-known/jwks.json"}
    assert "optional" not in policy["spec"]["jwt"]  # optional would let requests without a token through
    assert envoy_errors(policy) == []


def test_envoy_schema_check_catches_a_misspelt_field(gateways):
    policy = copy.deepcopy(kinds(gateways["gw-envoy"])["SecurityPolicy"])
    policy["spec"]["jwt"]["providers"][0]["remoteJwks"] = policy["spec"]["jwt"]["providers"][0].pop("remoteJWKS")
    assert envoy_errors(policy)


def test_istio_jwt_requires_a_principal_at_the_gateway(gateways):
    objs = kinds(gateways["gw-istio"])
    assert set(objs) == {"Gateway", "RequestAuthentication", "AuthorizationPolicy"}
    target = [{**GATEWAY_TARGET, "name": objs["Gateway"]["metadata"]["name"]}]
    authn, authz = objs["RequestAuthentication"], objs["AuthorizationPolicy"]
    assert authn["spec"]["targetRefs"] == authz["spec"]["targetRefs"] == target
    assert authn["spec"]["jwtRules"] == [{"issuer": "https://issuer.example.com", "audiences": ["models"],
                                          "jwksUri": "https://issuer.example.com/.well-known/jwks.json"}]
    # RequestAuthentication alone accepts a request without a token; ALLOW only with a request principal.
    assert authz["spec"]["action"] == "ALLOW"
    assert authz["spec"]["rules"] == [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]
    assert validate_custom_resources([objs["Gateway"], authn, authz]) == [None, None, None]


def test_client_certificates_use_the_gateway_api_frontend_validation(gateways):
    objs = kinds(gateways["gw-mtls"])
    assert set(objs) == {"Gateway"}
    validation = objs["Gateway"]["spec"]["tls"]["frontend"]["default"]["validation"]
    assert validation == {"caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "clients-ca"}],
                          "mode": "AllowValidOnly"}
    assert validate_custom_resources([objs["Gateway"]]) == [None]


def test_no_authentication_renders_only_the_gateway(gateways):
    objs = kinds(gateways["gw-none"])
    assert set(objs) == {"Gateway"} and "tls" not in objs["Gateway"]["spec"]


# --- the plan: the policy is registered, and its CRDs are declared installed -------------------------

def test_jwt_without_the_implementation_installed_is_refused():
    config = raw(exposure={**EXPOSURE, "authentication": "jwt", "gatewayImplementation": "envoy-gateway",
                           "jwt": JWT, "proxyNamespaces": ["envoy-gateway-system"]},
                 clusterPrerequisites=["gateway-api-crds"])
    assert_config_error(config, "exposure.gatewayImplementation", "'envoy-gateway'",
                        "declare 'envoy-gateway' in clusterPrerequisites")


def test_the_dev_plan_registers_the_jwt_policy_on_its_gateway(plan_with):
    from stacks.deploy_rules import Context, check, context_of

    rec = plan_with("dev", exposure={**EXPOSURE, "authentication": "jwt", "gatewayImplementation": "envoy-gateway",
                                     "jwt": JWT, "proxyNamespaces": ["envoy-gateway-system"]},
                    clusterPrerequisites=["gateway-api-crds", "envoy-gateway"])
    (gateway,) = [r.inputs for r in rec.resources if r.inputs.get("kind") == "Gateway"]
    (policy,) = [r.inputs for r in rec.resources if r.inputs.get("kind") == "SecurityPolicy"]
    assert policy["spec"]["targetRefs"] == [{**GATEWAY_TARGET, "name": gateway["metadata"]["name"]}]
    assert envoy_errors(policy) == []
    assert check(rec) == []
    # Without the declaration the deploy rule names the policy: the API server would not know its kind.
    ctx = context_of(rec)
    undeclared = Context(prerequisites=ctx.prerequisites - {"envoy-gateway"}, await_serving=ctx.await_serving)
    assert [v.rule for v in check(rec, undeclared)] == ["crd-installed-first"]
