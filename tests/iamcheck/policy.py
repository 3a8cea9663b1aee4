"""IAM's policy evaluation, for one account: identity policies and a bucket policy.

A request is allowed when a statement of the principal's identity policies
allows it and no statement of either policy denies it (an explicit Deny
wins). Matching follows the IAM reference: actions case-insensitively with
``*`` and ``?``; resources case-sensitively with ``*`` and ``?``; ``Not*``
elements; condition operators with their documented handling of keys the
request does not carry (a negated operator matches; ``...IfExists`` matches;
``Null`` tests presence) and the ``ForAnyValue:``/``ForAllValues:`` set
operators. An operator not implemented here raises, so a condition is never
silently taken as met.

Resource-policy Allows are not counted (the stack's bucket policies only
deny; its queue policies admit AWS services, not our roles).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class UnsupportedCondition(Exception):
    pass


@dataclass
class Request:
    action: str
    resource: str
    principal_arn: str
    context: dict[str, Any]  # condition key -> str | list[str]


@dataclass
class Decision:
    allowed: bool
    denied_by: dict[str, Any] | None = None  # the explicit Deny, if one matched
    where: str = ""  # "identity policy" or "bucket policy"


def decide(
    request: Request,
    identity: list[dict[str, Any]],
    resource_policy: list[dict[str, Any]] | None = None,
) -> Decision:
    for where, statements, check_principal in (
        ("identity policy", identity, False),
        ("bucket policy", resource_policy or [], True),
    ):
        for statement in statements:
            if statement.get("Effect") == "Deny" and applies(statement, request, check_principal):
                return Decision(False, statement, where)
    allowed = any(
        statement.get("Effect") == "Allow" and applies(statement, request, False)
        for statement in identity
    )
    return Decision(allowed)


def applies(statement: dict[str, Any], request: Request, check_principal: bool) -> bool:
    return (
        action_matches(statement, request.action)
        and resource_matches(statement, request.resource)
        and (not check_principal or _principal_matches(statement, request.principal_arn))
        and conditions_hold(statement.get("Condition") or {}, request)
    )


def action_matches(statement: dict[str, Any], action: str) -> bool:
    if "NotAction" in statement:
        return not any(_like(p, action, True) for p in _listed(statement["NotAction"]))
    return any(_like(p, action, True) for p in _listed(statement.get("Action", [])))


def resource_matches(statement: dict[str, Any], resource: str) -> bool:
    if "NotResource" in statement:
        return not any(_like(p, resource) for p in _listed(statement["NotResource"]))
    return any(_like(p, resource) for p in _listed(statement.get("Resource", [])))


def _principal_matches(statement: dict[str, Any], principal_arn: str) -> bool:
    if "NotPrincipal" in statement:
        raise UnsupportedCondition("NotPrincipal is not evaluated here")
    principal = statement.get("Principal")
    if principal == "*":
        return True
    aws = _listed(principal.get("AWS", [])) if isinstance(principal, dict) else []
    return "*" in aws or principal_arn in aws


def conditions_hold(conditions: dict[str, Any], request: Request) -> bool:
    # Condition key names are case-insensitive (values are not, unless the
    # operator says so).
    context = {key.lower(): value for key, value in request.context.items()}
    return all(
        _condition(operator, key.lower(), _listed(values), context)
        for operator, block in conditions.items()
        for key, values in block.items()
    )


_OPERATORS = {
    "StringEquals": (lambda p, v: p == v, False),
    "StringNotEquals": (lambda p, v: p == v, True),
    "StringEqualsIgnoreCase": (lambda p, v: p.lower() == v.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda p, v: p.lower() == v.lower(), True),
    "StringLike": (lambda p, v: _like(p, v), False),
    "StringNotLike": (lambda p, v: _like(p, v), True),
    "ArnEquals": (lambda p, v: p == v, False),
    "ArnNotEquals": (lambda p, v: p == v, True),
    "ArnLike": (lambda p, v: _like(p, v), False),
    "ArnNotLike": (lambda p, v: _like(p, v), True),
    "Bool": (lambda p, v: p.lower() == v.lower(), False),
    "NumericEquals": (lambda p, v: float(p) == float(v), False),
    "NumericLessThan": (lambda p, v: float(v) < float(p), False),
    "NumericGreaterThan": (lambda p, v: float(v) > float(p), False),
}


def _condition(operator: str, key: str, wanted: list[Any], context: dict[str, Any]) -> bool:
    present = key in context and context[key] is not None
    if operator == "Null":
        return (not present) == (str(wanted[0]).lower() == "true")
    qualifier, _, name = operator.rpartition(":")
    if_exists = name.endswith("IfExists")
    name = name.removesuffix("IfExists")
    if name not in _OPERATORS:
        raise UnsupportedCondition(f"condition operator {operator} is not evaluated here")
    match, negated = _OPERATORS[name]
    wanted = [str(w) for w in wanted]
    if not present:
        if qualifier == "ForAllValues":
            return True  # no values: every one of them matches
        return if_exists or (negated and qualifier != "ForAnyValue")
    values = [str(v) for v in _listed(context[key])]
    hits = [any(match(w, v) for w in wanted) for v in values]
    if qualifier == "ForAnyValue":
        return any((not h) if negated else h for h in hits)
    if qualifier == "ForAllValues":
        return all((not h) if negated else h for h in hits)
    if qualifier:
        raise UnsupportedCondition(f"condition qualifier {qualifier} is not evaluated here")
    matched = any(hits)
    return not matched if negated else matched


def _like(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM's wildcards: ``*`` any run of characters (``/`` and ``:`` included), ``?`` one."""
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
