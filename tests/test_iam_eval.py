"""The policy evaluator the trust tests rely on: its multi-valued and IfExists condition rules, written from
the IAM user guide (reference_policies_condition-single-vs-multi-valued-context-keys.html,
reference_policies_elements_condition_operators.html#Conditions_IfExists)."""

from __future__ import annotations

import pytest

from tests.iam_eval import Request, s3_allows

ROLE = "arn:aws:iam::123456789012:role/r"


def allowed(condition: dict, **context) -> bool:
    policy = {"Statement": [{"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*", "Condition": condition}]}
    return s3_allows(Request(ROLE, "ec2:CreateTags", "arn:aws:ec2:us-east-1:123456789012:instance/i-1", context),
                     [policy], None)


def test_for_all_values_needs_every_value_in_the_set_and_holds_for_an_empty_one():
    keys = {"ForAllValues:StringEquals": {"aws:TagKeys": ["Name", "team"]}}
    assert allowed(keys, **{"aws:TagKeys": ["Name"]})
    assert allowed(keys, **{"aws:TagKeys": ["Name", "team"]})
    assert not allowed(keys, **{"aws:TagKeys": ["Name", "owner"]})
    assert allowed(keys)  # absent: vacuously true (the guide's warning about ForAllValues)


def test_for_any_value_needs_one_value_and_fails_without_the_key():
    keys = {"ForAnyValue:StringLike": {"aws:TagKeys": ["team*"]}}
    assert allowed(keys, **{"aws:TagKeys": ["Name", "team-a"]})
    assert not allowed(keys, **{"aws:TagKeys": ["Name"]})
    assert not allowed(keys)


def test_if_exists_holds_when_the_key_is_absent_and_tests_it_when_present():
    keys = {"StringEqualsIfExists": {"aws:RequestTag/env": "dev"}}
    assert allowed(keys)
    assert allowed(keys, **{"aws:RequestTag/env": "dev"})
    assert not allowed(keys, **{"aws:RequestTag/env": "prod"})


def test_an_unknown_operator_or_qualifier_is_refused():
    with pytest.raises(NotImplementedError):
        allowed({"ForEveryValue:StringEquals": {"aws:TagKeys": ["Name"]}}, **{"aws:TagKeys": ["Name"]})
    with pytest.raises(NotImplementedError):
        allowed({"NumericLessThan": {"aws:MultiFactorAuthAge": "3600"}}, **{"aws:MultiFactorAuthAge": "1"})
