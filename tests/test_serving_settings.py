"""Serving config validation: servers, models, labels, batching, canary, GPUs, exposure.

Each bad value must produce one message naming the full key, the value and what is allowed.
"""

from __future__ import annotations

import pytest

from stacks.config import parse_settings
from tests.test_settings import NS, assert_config_error, raw, stack_raw

GPU = {"nodePool": "gpu", "gpus": 1}


def servers(**servers: dict) -> dict[str, str]:
    return raw(servers=servers)


def one(models: dict | None = None, **server: object) -> dict[str, str]:
    return servers(default={**GPU, "models": {"digits": {}} if models is None else models, **server})


PINNED = {"versionPolicy": "specific", "versions": [1]}

BAD = [
    (servers(), f"{NS}:servers", "{}", "at least one server"),
    (servers(Default={**GPU, "models": {"a": {}}}), f"{NS}:servers.Default", "'Default'", "lowercase letters"),
    (one(replicas=3, maxReplicas=2), f"{NS}:servers.default.maxReplicas", "2", "at least replicas (3)"),
    (one(cpu="lots"), f"{NS}:servers.default.cpu", "'lots'", "Kubernetes quantity"),
    (one({}), f"{NS}:servers.default.models", "{}", "at least one model"),
    (one({"Digits Model": {}}), f"{NS}:servers.default.models.Digits Model", "'Digits Model'", "lowercase letters"),
    (one({"digits": {**PINNED, "labels": {"stable": 2}}}),
     f"{NS}:servers.default.models.digits.labels.stable", "2", "one of the loaded versions [1]"),
    (one({"digits": {"versionPolicy": "all", "labels": {"bad-label": 2}}}),
     f"{NS}:servers.default.models.digits.labels.bad-label", "'bad-label'", "[a-zA-Z0-9_]+"),
    (one({"digits": {"labels": {"stable": 1}}}),
     f"{NS}:servers.default.models.digits.labels.stable", "1", "no labels with versionPolicy latest"),
    (one({"digits": {"versionPolicy": "specific"}}), f"{NS}:servers.default.models.digits.versions", "[]",
     "at least one version"),
    (servers(a={**GPU, "models": {"digits": {}}}, b={**GPU, "models": {"digits": {}}}),
     f"{NS}:servers.b.models.digits", "'digits'", "not already served by servers.a"),
    (one(nodePool="gpus"), f"{NS}:servers.default.nodePool", "'gpus'", "one of the nodePools keys"),
    (one(gpus=2), f"{NS}:servers.default.gpus", "2", "at most 1, the GPUs per node of pool 'gpu'"),
    (one(gpus=0), f"{NS}:servers.default.gpus", "0", "at least 1 on GPU pool 'gpu'"),
    (servers(default={"nodePool": "system", "gpus": 1, "models": {"a": {}}}), f"{NS}:servers.default.gpus",
     "1", "at most 0"),
    # 4 replicas at peak + 1 surge pod of a rolling update on a 2-GPU pool.
    ({**raw(nodePools={"system": {"instanceTypes": ["m6i.large"]},
                       "gpu": {"instanceTypes": ["g5.xlarge"], "gpusPerNode": 1, "minSize": 0, "desiredSize": 0,
                               "maxSize": 2}}), **one(replicas=4, maxReplicas=4)},
     f"{NS}:nodePools.gpu.maxSize", "2", "enough for the 5 GPUs"),
    # replicas 1 fits, but the HPA's maxReplicas 3 + 1 surge pod does not (the peak, not the floor).
    ({**raw(nodePools={"system": {"instanceTypes": ["m6i.large"]},
                       "gpu": {"instanceTypes": ["g5.xlarge"], "gpusPerNode": 1, "minSize": 0, "desiredSize": 0,
                               "maxSize": 3}}), **one(replicas=1, maxReplicas=3)},
     f"{NS}:nodePools.gpu.maxSize", "3",
     "servers.default 4 (maxReplicas 3 + 1 surge = 4 pods x 1 GPU); 3 at maxSize"),
    # One replica on a one-GPU pool: the rollout's surge pod would never schedule.
    ({**raw(nodePools={"system": {"instanceTypes": ["m6i.large"]},
                       "gpu": {"instanceTypes": ["g5.xlarge"], "gpusPerNode": 1, "minSize": 0, "desiredSize": 0,
                               "maxSize": 1}}), **one(replicas=1)},
     f"{NS}:nodePools.gpu.maxSize", "1", "one surge pod per Deployment included"),
    # GPU image exactly when GPUs are requested, as KServe insists.
    (one(image="registry.example.com/tensorflow/serving:2.18.0"), f"{NS}:servers.default.image",
     "'registry.example.com/tensorflow/serving:2.18.0'", "a tag with -gpu when gpus > 0"),
    (servers(default={"nodePool": "system", "gpus": 0, "image": "docker.io/tensorflow/serving:2.18.0-gpu",
                      "models": {"a": {}}}), f"{NS}:servers.default.image",
     "'docker.io/tensorflow/serving:2.18.0-gpu'", "without it when gpus is 0"),
    (one(image="not an image"), f"{NS}:servers.default.image", "'not an image'", "an image reference"),
    (servers(default={"nodePool": "system", "gpus": 0, "gpuMemoryFraction": 0.5, "models": {"a": {}}}),
     f"{NS}:servers.default.gpuMemoryFraction", "0.5", "unset when gpus is 0"),
    (one(gpuMemoryFraction=1.5), f"{NS}:servers.default.gpuMemoryFraction", "1.5", "less than or equal to 1"),
    # Batching: allowed sizes strictly increasing, the last equal to the max.
    (one(batching={"enabled": True, "maxBatchSize": 32, "allowedBatchSizes": [8, 8, 32]}),
     f"{NS}:servers.default.batching.allowedBatchSizes", "[8, 8, 32]", "strictly increasing"),
    (one(batching={"enabled": True, "maxBatchSize": 64, "allowedBatchSizes": [8, 32]}),
     f"{NS}:servers.default.batching.allowedBatchSizes", "[8, 32]", "ending with maxBatchSize (64)"),
    (one(batching={"enabled": True, "allowedBatchSizes": [8, 32]}),
     f"{NS}:servers.default.batching.maxBatchSize", "null", "set to 32"),
    (one(batching={"enabled": True, "numBatchThreads": 0}),
     f"{NS}:servers.default.batching.numBatchThreads", "0", "greater than or equal to 1"),
    (one(batching={"enable": True}), f"{NS}:servers.default.batching.enable", "true",
     "unknown key; expected one of allowedBatchSizes"),
    (one(syncIntervalSeconds=1), f"{NS}:servers.default.syncIntervalSeconds", "1", "greater than or equal to 10"),
    # Canary rules.
    (one({"digits": {"canaryVersion": 2}}), f"{NS}:servers.default.models.digits.canaryVersion", "2",
     "unset unless versionPolicy is specific"),
    (one({"digits": {"versionPolicy": "specific", "versions": [3], "canaryVersion": 2}}),
     f"{NS}:servers.default.models.digits.canaryVersion", "2", "greater than every stable version (3)"),
    (one({"digits": {**PINNED, "labels": {"canary": 1}, "canaryVersion": 2}}),
     f"{NS}:servers.default.models.digits.labels.canary", "1", "unset while canaryVersion is active"),
    ({**one({"digits": {**PINNED, "canaryVersion": 2}}), **raw(trafficRouter="none")},
     f"{NS}:servers.default.models.digits.canaryVersion", "2", "unset while trafficRouter is none"),
    (one(canaryWeight=100), f"{NS}:servers.default.canaryWeight", "100", "less than or equal to 99"),
    # Exposure and who may call.
    (raw(exposure={"enabled": True, "gatewayClassName": "eg", "hostname": "models.example.com",
                   "proxyNamespaces": ["envoy-gateway-system"]}),
     f"{NS}:exposure.tlsSecretName", "''", "TLS is not optional"),
    (raw(exposure={"enabled": True, "gatewayClassName": "eg", "hostname": "not a host", "tlsSecretName": "t",
                   "proxyNamespaces": ["x"]}), f"{NS}:exposure.hostname", "'not a host'", "a DNS name"),
    (raw(exposure={"enabled": True, "gatewayClassName": "eg", "hostname": "m.example.com", "tlsSecretName": "t"}),
     f"{NS}:exposure.proxyNamespaces", "[]", "the namespaces of the gateway's proxy pods"),
    (raw(exposure={"proxyCidrs": ["everyone"]}), f"{NS}:exposure.proxyCidrs.0", "'everyone'", "IPv4 CIDR"),
    (raw(allowedPodLabels={"app": "client"}), f"{NS}:allowedPodLabels", '{"app": "client"}',
     "unset unless allowedNamespaces"),
    (raw(allowedNamespaces=["apps"], allowedPodLabels={"app": "bad value!"}), f"{NS}:allowedPodLabels.app",
     "'bad value!'", "a Kubernetes label value"),
    # Time-sliced GPUs: one slice per pod, and the memory shares must fit in one GPU.
    ({**raw(nodePools={"system": {"instanceTypes": ["m6i.large"]},
                       "gpu": {"instanceTypes": ["g5.12xlarge"], "gpusPerNode": 4, "gpuTimeSlicing": 2}}),
      **one(gpus=2)}, f"{NS}:servers.default.gpus", "2", "1 on pool 'gpu', whose GPUs are time-sliced"),
    ({**raw(nodePools={"system": {"instanceTypes": ["m6i.large"]},
                       "gpu": {"instanceTypes": ["g5.xlarge"], "gpusPerNode": 1, "gpuTimeSlicing": 4}}),
      **one(gpuMemoryFraction=0.3)}, f"{NS}:servers.default.gpuMemoryFraction", "0.3", "at most 0.25"),
]


@pytest.mark.parametrize("config,key,value,allowed", BAD, ids=[b[1].split(":")[1] + "=" + b[2] for b in BAD])
def test_bad_serving_config_names_key_value_and_allowed(config, key, value, allowed):
    assert_config_error(config, key, value, allowed)


def test_every_stack_runs_several_models_with_batching_and_a_canary():
    for stack in ("dev", "prod", "gke-dev"):
        settings = parse_settings(stack_raw(stack))
        default = settings.servers["default"]
        assert len(default.models) >= 2, stack
        assert default.batching.enabled and default.has_canary, stack
        assert default.target_requests_per_second, stack
    dev = parse_settings(stack_raw("dev"))
    assert {s.node_pool for s in dev.servers.values()} == {"gpu", "system"}


def test_specific_policy_labels_its_highest_version_stable_unless_set():
    settings = parse_settings(one({"a": {"versionPolicy": "specific", "versions": [3, 5]},
                                   "b": {"versionPolicy": "specific", "versions": [3, 5], "labels": {"stable": 3}},
                                   "c": {"versionPolicy": "all"}}))
    models = settings.servers["default"].models
    assert models["a"].stable_labels() == {"stable": 5}
    assert models["b"].stable_labels() == {"stable": 3}
    assert models["c"].stable_labels() == {}


def test_a_canary_version_already_served_means_promoted():
    settings = parse_settings(one({"digits": {"versionPolicy": "specific", "versions": [2], "canaryVersion": 2}}))
    assert not settings.servers["default"].has_canary
    # With no canary active, trafficRouter none is fine.
    parse_settings({**one({"digits": {"versionPolicy": "specific", "versions": [2], "canaryVersion": 2}}),
                    **raw(trafficRouter="none")})


def test_time_sliced_pool_gets_a_default_memory_fraction():
    settings = parse_settings({**raw(nodePools={"system": {"instanceTypes": ["m6i.large"]},
                                                "gpu": {"instanceTypes": ["g5.xlarge"], "gpusPerNode": 1,
                                                        "gpuTimeSlicing": 3, "maxSize": 3}}),
                               **one(replicas=6, maxReplicas=6)})
    assert settings.gpu_memory_fraction(settings.servers["default"]) == 0.3
    assert parse_settings({}).gpu_memory_fraction(parse_settings({}).servers["default"]) is None
