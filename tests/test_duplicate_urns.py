"""The mock engine refuses a duplicate URN as the real engine does, and the program never makes one."""

from __future__ import annotations

import json

import pytest

from components.node_labels import name_slug, unique_slugs
from stacks.mock_engine import DuplicateUrnError, Recording, run_program
from stacks.plan import ROOT
from stacks.settings import PROJECT
from tests.test_settings import NS, stack_raw


def test_mock_engine_refuses_a_duplicate_urn(tmp_path):
    program = tmp_path / "__main__.py"
    program.write_text("import pulumi\n\n"
                       "class C(pulumi.ComponentResource):\n"
                       "    def __init__(self, name):\n"
                       "        super().__init__('test:index:C', name, None, None)\n\n"
                       "C('same')\nC('other')\nC('same')\n")
    recording = Recording(stack="s", project="p")
    with pytest.raises(DuplicateUrnError, match=r"Duplicate resource URN 'urn:pulumi:s::p::test:index:C::same'; "
                                                r"try giving it a unique name"):
        run_program(program, "s", "p", {}, [], into=recording)
    # Registrations complete concurrently, so their order is not fixed; the duplicate is never recorded.
    assert sorted(r.name for r in recording.resources) == ["other", "same"]


def test_label_keys_with_one_slug_get_distinct_autoscaler_tags():
    # team.name and team-name are distinct Kubernetes labels; both used to name their Auto Scaling tag
    # resource ...-ca-label-team-name (one URN twice).
    pools = json.loads(stack_raw("dev")[f"{NS}:nodePools"])
    pools["gpu"]["labels"] = {"team.name": "a", "team-name": "b", "team": "c"}
    config = {**stack_raw("dev"), f"{NS}:nodePools": json.dumps(pools)}
    recording = run_program(ROOT / "__main__.py", "dev", PROJECT, config, [])
    tags = {r.inputs["tag"]["key"]: r.name for r in recording.of_type("aws:autoscaling/tag:Tag")
            if r.name.startswith("eks-gpu-ca-label-team")}
    prefix = "k8s.io/cluster-autoscaler/node-template/label/"
    assert set(tags) == {prefix + "team.name", prefix + "team-name", prefix + "team"}
    assert len(set(tags.values())) == 3
    assert tags[prefix + "team"] == "eks-gpu-ca-label-team"  # a key with a slug of its own keeps its name


def test_unique_slugs_keep_unique_ones_and_separate_the_rest():
    slugs = unique_slugs(["a.b", "a-b", "a/b", "c"])
    assert slugs["c"] == "c" and len(set(slugs.values())) == 4
    assert all(slugs[k].startswith(name_slug(k) + "-") for k in ("a.b", "a-b", "a/b"))
