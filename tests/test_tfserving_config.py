"""Generated TF Serving config files, parsed with TF Serving's own protobuf definitions."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components.serving.tfserving_config import (
    ServedModel,
    render_model_config,
)
from stacks.mock_engine import Recording
from tests.conftest import mounted_config


def parse(text: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def models_config(rec: Recording, name: str = "tfserving-cpu") -> str:
    return mounted_config(rec, name)["models.config"]


def test_dev_cpu_server_config_parses_with_latest_policy(dev: Recording):
    (model,) = parse(models_config(dev)).model_config_list.config
    assert model.name == "digits-cpu" and model.base_path == "/models/digits-cpu"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert model.model_version_policy.latest.num_versions == 1


def test_prod_config_pins_versions_and_labels(prod: Recording):
    digits, _ = parse(models_config(prod, "tfserving-default")).model_config_list.config
    assert list(digits.model_version_policy.specific.versions) == [1]
    assert dict(digits.version_labels) == {"stable": 1}


def test_all_policies_and_several_models_parse():
    text = render_model_config([
        ServedModel("a", "specific", versions=(3, 4), labels={"stable": 3, "canary": 4}),
        ServedModel("b", "all", labels={"stable": 7}),
        ServedModel("c", "latest", latest_versions=2),
    ])
    configs = {c.name: c for c in parse(text).model_config_list.config}
    assert list(configs) == ["a", "b", "c"]
    assert dict(configs["a"].version_labels) == {"stable": 3, "canary": 4}
    assert configs["b"].model_version_policy.WhichOneof("policy_choice") == "all"
    assert configs["c"].model_version_policy.latest.num_versions == 2


def test_parser_rejects_unknown_fields():
    with pytest.raises(text_format.ParseError):
        parse(render_model_config([ServedModel("a")]).replace("base_path", "basepath"))
