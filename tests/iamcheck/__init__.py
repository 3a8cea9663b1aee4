"""Every AWS call the end-to-end tests make, checked against the synthesized policies.

moto does not enforce IAM, so a function could call what its role does not
allow and every test would still pass. Here each call a function or state
machine made in a harness (``scanctl.harness.principals`` records them) is
turned into what IAM checks (``operations``: action, resource, condition
keys) and evaluated (``policy``) against that principal's policies in the
template the CDK CLI synthesized (``template``), and against the source
bucket's policy when the access gate is in the template. A call the policies
do not allow is a problem that names the principal, the operation, the
action and ARN, and the closest statement the principal has.

The template is the variant (tests/synth.py) whose configuration matches the
harness's: without quarantine or webhook, ``minimal``; Standard otherwise,
``everything`` (quarantine, webhook, the access gate, KMS); Express,
``express`` (quarantine, webhook). Where a harness has less than its variant
(a webhook but no quarantine), the variant's grants are a superset of what
that configuration deploys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scanctl.harness.principals import AwsCall
from tests import synth
from tests.iamcheck import operations, policy, template

FUNCTIONS = sorted(
    p.name
    for p in (Path(__file__).resolve().parents[2] / "functions").iterdir()
    if (p / "app.py").exists()
)


def variant_for(options: Any) -> str:
    if options.workflow_type == "EXPRESS":
        return "express"
    if not options.quarantine and not options.webhook_url:
        return "minimal"
    return "everything"


def binding_for(harness: Any, variant: str) -> template.Binding:
    from scanctl.harness.resources import (
        EXPRESS_LOG_GROUP,
        EXPRESS_STATE_MACHINE_NAME,
        RESCAN_STATE_MACHINE_NAME,
        STATE_MACHINE_NAME,
    )

    o, d = harness.options, harness.deployment
    account, region = _account_and_region(variant)
    table_arn = f"arn:aws:dynamodb:{region}:{account}:table/{o.table_name}"

    def queue(url: str) -> dict[str, str]:
        name = url.rsplit("/", 1)[-1]
        return {"Ref": url, "Arn": f"arn:aws:sqs:{region}:{account}:{name}", "QueueName": name}

    config = synth.VARIANTS[variant]
    renames = []
    if "EVENT_BUS_ARN" in config:  # the harness publishes to the default bus
        renames.append(
            (config["EVENT_BUS_ARN"], f"arn:aws:events:{region}:{account}:event-bus/default")
        )
    renames += [
        (synth.SOURCE_ARN.rsplit(":", 1)[-1], o.source_bucket),
        (synth.QUARANTINE_ARN.rsplit(":", 1)[-1], o.quarantine_bucket),
    ]
    names = [o.source_bucket, o.quarantine_bucket, o.definitions_bucket]
    names += [STATE_MACHINE_NAME, EXPRESS_STATE_MACHINE_NAME, RESCAN_STATE_MACHINE_NAME]
    clashes = [(a, b) for a in names for b in names if a != b and b.startswith(a)]
    # A trailing * granted on one would match the other: the check would pass
    # what AWS, with the stack's own distinct names, refuses.
    assert not clashes, f"harness names must not be prefixes of each other: {clashes}"
    return template.Binding(
        account=account,
        region=region,
        by_path={
            "Audit/Table": {"Ref": o.table_name, "Arn": table_arn},
            "Definitions/Cache": {
                "Ref": o.definitions_bucket,
                "Arn": f"arn:aws:s3:::{o.definitions_bucket}",
            },
            "Ingest/ScanQueue": queue(d.queue_url),
            "Ingest/DeadLetterQueue": queue(d.dlq_url),
            "FailureRecording/DeadLetterQueue": queue(d.failure_dlq_url),
            "Workflow/ExpressExecutionLogs": {
                "Ref": EXPRESS_LOG_GROUP,
                "Arn": f"arn:aws:logs:{region}:{account}:log-group:{EXPRESS_LOG_GROUP}:*",
            },
        },
        function_names={name: name.replace("_", "-") for name in FUNCTIONS},
        machine_names={
            "STANDARD": STATE_MACHINE_NAME,
            "EXPRESS": EXPRESS_STATE_MACHINE_NAME,
            "RESCAN": RESCAN_STATE_MACHINE_NAME,
        },
        renames=renames,
    )


def _account_and_region(variant: str) -> tuple[str, str]:
    """Where the variant deploys: its own account and region where it names them
    (calls are moved there, so a grant pinned to another region is caught), else
    the harness's account and the CLI's default region (the harness's too)."""
    from scanctl.harness.environment import ACCOUNT_ID, REGION

    config = synth.VARIANTS[variant]
    assert REGION == synth.CLI_DEFAULT_REGION
    return config.get("ACCOUNT_ID", ACCOUNT_ID), config.get("REGION", REGION)


def check(harness: Any, synthesized: dict[str, Any], variant: str) -> list[str]:
    """The problems with ``harness.calls`` under ``synthesized``'s policies."""
    from scanctl.harness.environment import ACCOUNT_ID, REGION

    binding = binding_for(harness, variant)
    model = template.load(synthesized, binding)
    d = harness.deployment
    moved = (f":{REGION}:{ACCOUNT_ID}:", f":{binding.region}:{binding.account}:")
    where = operations.Where(
        account=binding.account,
        region=binding.region,
        queue_arns={
            url: f"arn:aws:sqs:{binding.region}:{binding.account}:{url.rsplit('/', 1)[-1]}"
            for url in (d.queue_url, d.dlq_url, d.failure_dlq_url)
            if url
        },
        function_arns={n: v["Arn"] for n, v in _function_values(binding).items()},
    )
    problems: dict[str, None] = {}
    for call in harness.calls:
        for problem in check_call(call, model, where, variant, moved):
            problems.setdefault(problem)
    return list(problems)


def check_call(
    call: AwsCall,
    model: template.Model,
    where: operations.Where,
    variant: str,
    moved: tuple[str, str] = ("", ""),
) -> list[str]:
    """``moved``: the harness's ``:region:account:`` -> the variant's, in ARNs."""
    policies = model.principals.get(call.principal)
    if policies is None:
        return [f"{call.principal} has no role in the {variant} template, yet called {_op(call)}"]
    problems = []
    for need in operations.needs(call, where):
        if moved[0]:
            need.resource = need.resource.replace(*moved)
        bucket = _bucket_of(need.resource)
        request = policy.Request(
            action=need.action,
            resource=need.resource,
            principal_arn=policies.role_arn,
            context={
                "aws:PrincipalArn": policies.role_arn,
                "aws:SecureTransport": "true",
                **need.context,
            },
        )
        decision = policy.decide(request, policies.statements, model.bucket_policies.get(bucket))
        if decision.allowed:
            continue
        if decision.denied_by is not None:
            why = (
                f"denied by its {decision.where}: "
                f"{json.dumps(decision.denied_by, sort_keys=True)[:600]}"
            )
        else:
            why = f"no statement allows it; closest: {closest(policies.statements, need)}"
        problems.append(
            f"{call.principal} called {_op(call)}: {need.action} on {need.resource} "
            f"is not allowed in the {variant} template ({why})"
        )
    return problems


def closest(statements: list[dict[str, Any]], need: operations.Need) -> str:
    """The statement that comes nearest to allowing ``need``, as a reviewer reads it."""

    def score(statement: dict[str, Any]) -> tuple[int, int]:
        actions = policy.action_matches(statement, need.action)
        service = any(
            str(a).split(":")[0] == need.action.split(":")[0]
            for a in policy._listed(statement.get("Action", []))
        )
        resources = [str(r) for r in policy._listed(statement.get("Resource", []))]
        prefix = max((_common_prefix(r, need.resource) for r in resources), default=0)
        return (2 if actions else 1 if service else 0, prefix)

    allows = [s for s in statements if s.get("Effect") == "Allow"]
    if not allows:
        return "none (the role has no statements)"
    best = max(allows, key=score)
    return json.dumps(
        {k: best[k] for k in ("Action", "Resource", "Condition") if k in best}, sort_keys=True
    )


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _bucket_of(resource: str) -> str | None:
    if not resource.startswith("arn:aws:s3:::"):
        return None
    return resource.removeprefix("arn:aws:s3:::").split("/", 1)[0]


def _op(call: AwsCall) -> str:
    return f"{call.service}:{call.operation}"


def _function_values(binding: template.Binding) -> dict[str, dict[str, str]]:
    return {
        name: {
            "Arn": f"arn:aws:lambda:{binding.region}:{binding.account}:function:{name}",
        }
        for name in binding.function_names.values()
    }
