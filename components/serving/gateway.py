"""External HTTPS entry for the models: a Gateway API ``Gateway`` (off unless configured), and the
authentication its controller enforces on every request.

Gateway API itself defines no request authentication; client-certificate validation is its standard
``spec.tls.frontend`` (GEP-91, https://gateway-api.sigs.k8s.io/geps/gep-91/). JWT validation is a
controller's policy: Envoy Gateway's ``SecurityPolicy``
(https://gateway.envoyproxy.io/docs/tasks/security/jwt-authentication/), Istio's
``RequestAuthentication`` plus an ``AuthorizationPolicy`` that requires a principal, since a request
without a token is otherwise let through unauthenticated
(https://istio.io/latest/docs/reference/config/security/request_authentication/).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.serving.routing import GATEWAY_API, ExternalGateway

ENVOY_GATEWAY_API = "gateway.envoyproxy.io/v1alpha1"
ISTIO_SECURITY_API = "security.istio.io/v1"
AUTHENTICATIONS = ("none", "jwt", "client-certificate")
IMPLEMENTATIONS = ("envoy-gateway", "istio", "gke", "other")


@dataclass(frozen=True)
class JwtIssuer:
    """The issuer whose tokens the gateway accepts."""

    issuer: str
    jwks_uri: str
    audiences: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServingGatewayArgs:
    """Inputs of :class:`ServingGateway`."""

    namespace: pulumi.Input[str]
    gateway_class_name: str
    """GatewayClass of the installed controller (the controller provisions the load balancer)."""
    hostname: str
    tls_secret_name: str
    """``kubernetes.io/tls`` Secret in ``namespace`` (e.g. issued by cert-manager)."""
    authentication: str = "none"
    """``none``, ``jwt`` (needs ``jwt`` and an implementation with a JWT policy) or
    ``client-certificate`` (needs ``client_ca_config_map``)."""
    implementation: str = "other"
    """Controller of ``gateway_class_name``: ``envoy-gateway``, ``istio``, ``gke`` or ``other``."""
    jwt: JwtIssuer | None = None
    client_ca_config_map: str = ""
    """ConfigMap in ``namespace`` whose ``ca.crt`` holds the CAs client certificates must chain to."""


class ServingGateway(pulumi.ComponentResource):
    """Creates: a ``Gateway`` with one HTTPS listener (TLS terminated with the given certificate)
    that accepts routes from the serving namespace only. Plain HTTP is not offered. With
    authentication ``client-certificate`` the Gateway requires a client certificate chaining to the
    given CAs; with ``jwt`` an Envoy Gateway ``SecurityPolicy`` or Istio ``RequestAuthentication`` +
    ``AuthorizationPolicy`` attached to the Gateway rejects requests without a valid token.
    """

    listener: ExternalGateway

    def __init__(self, name: str, args: ServingGatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("tfplatform:serving:ServingGateway", name, None, opts)
        _check(name, args)
        child = pulumi.ResourceOptions(parent=self)
        spec: dict = {"gatewayClassName": args.gateway_class_name,
                      "listeners": [{"name": "https", "protocol": "HTTPS", "port": 443, "hostname": args.hostname,
                                     "tls": {"mode": "Terminate",
                                             "certificateRefs": [{"kind": "Secret",
                                                                  "name": args.tls_secret_name}]},
                                     "allowedRoutes": {"namespaces": {"from": "Same"}}}]}
        if args.authentication == "client-certificate":
            # Gateway-wide (not per listener): a TLS connection can be reused across listeners of one port,
            # which GEP-91 moved validation to spec.tls.frontend to close. AllowValidOnly refuses a
            # connection without a valid certificate.
            spec["tls"] = {"frontend": {"default": {"validation": {
                "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": args.client_ca_config_map}],
                "mode": "AllowValidOnly"}}}}
        gateway = k8s.apiextensions.CustomResource(
            f"{name}-gateway", api_version=GATEWAY_API, kind="Gateway",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=args.namespace), spec=spec, opts=child)
        # Policies target the Gateway, not each HTTPRoute: a route added later is covered too.
        target = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}
        self.policies: list[k8s.apiextensions.CustomResource] = []
        if args.authentication == "jwt" and args.jwt is not None:
            jwt = args.jwt
            meta = lambda suffix: k8s.meta.v1.ObjectMetaArgs(  # noqa: E731
                name=f"{name}-{suffix}", namespace=args.namespace)
            if args.implementation == "envoy-gateway":
                # A request without a valid token gets 401 unless the provider is marked optional.
                self.policies.append(k8s.apiextensions.CustomResource(
                    f"{name}-jwt", api_version=ENVOY_GATEWAY_API, kind="SecurityPolicy", metadata=meta("jwt"),
                    spec={"targetRefs": [target],
                          "jwt": {"providers": [{"name": "issuer", "issuer": jwt.issuer,
                                                 "audiences": list(jwt.audiences),
                                                 "remoteJWKS": {"uri": jwt.jwks_uri}}]}}, opts=child))
            else:
                self.policies.append(k8s.apiextensions.CustomResource(
                    f"{name}-jwt", api_version=ISTIO_SECURITY_API, kind="RequestAuthentication",
                    metadata=meta("jwt"),
                    spec={"targetRefs": [target], "jwtRules": [{"issuer": jwt.issuer, "jwksUri": jwt.jwks_uri,
                                                                "audiences": list(jwt.audiences)}]}, opts=child))
                # RequestAuthentication only rejects invalid tokens; this ALLOW policy makes a valid one
                # mandatory (requests without a request principal match no rule and are denied).
                self.policies.append(k8s.apiextensions.CustomResource(
                    f"{name}-require-jwt", api_version=ISTIO_SECURITY_API, kind="AuthorizationPolicy",
                    metadata=meta("require-jwt"),
                    spec={"targetRefs": [target], "action": "ALLOW",
                          "rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}, opts=child))
        self.listener = ExternalGateway(name=gateway.metadata["name"], namespace=args.namespace,
                                        hostname=args.hostname)
        self.url = f"https://{args.hostname}"
        self.register_outputs({"url": self.url})


def _check(name: str, args: ServingGatewayArgs) -> None:
    if args.authentication not in AUTHENTICATIONS:
        raise ValueError(f"ServingGateway {name}: authentication {args.authentication!r}, expected one of "
                         f"{AUTHENTICATIONS}")
    if args.implementation not in IMPLEMENTATIONS:
        raise ValueError(f"ServingGateway {name}: implementation {args.implementation!r}, expected one of "
                         f"{IMPLEMENTATIONS}")
    if args.authentication == "jwt" and (args.jwt is None or args.implementation not in ("envoy-gateway", "istio")):
        raise ValueError(f"ServingGateway {name}: jwt authentication needs jwt and implementation envoy-gateway "
                         "or istio")
    if args.authentication == "client-certificate" and not args.client_ca_config_map:
        raise ValueError(f"ServingGateway {name}: client-certificate authentication needs client_ca_config_map")
