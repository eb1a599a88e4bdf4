"""Entry point of the CrossGuard pack: `pulumi preview --policy-pack policy`.

Only assembles the pack. ``PolicyPack(...)`` starts the analyzer's gRPC server and blocks forever, so
nothing may import this module: tests import ``rules`` (see tests/test_policy_pack.py). The CLI runs
this file with the pack directory first on ``sys.path``, hence the plain ``import rules``.
"""

from pulumi_policy import EnforcementLevel, PolicyPack

import rules

PolicyPack(
    name="tfserving-platform-policies",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=list(rules.POLICIES),
)
