"""The synthesized stack: resources, properties, least privilege, nag and cfn-lint."""

from __future__ import annotations

import json
import re

import pytest

import statemachines
from functions.shared import access_gate
from tests.infrastructure.conftest import (
    ACCOUNT,
    ADMIN_ARN,
    BUS_ARN,
    INVENTORY_ARN,
    KMS_KEY_ARN,
    QUARANTINE_ARN,
    QUARANTINE_KMS_ARN,
    REGION,
    SECRET_ARN,
    SOURCE_ARN,
    TOPIC_ARN,
)


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def one(template: dict, kind: str) -> dict:
    [resource] = resources(template, kind).values()
    return resource


def functions_by_handler(template: dict) -> dict[str, dict]:
    out = {}
    for logical_id, fn in resources(template, "AWS::Lambda::Function").items():
        command = fn["Properties"].get("ImageConfig", {}).get("Command", [""])
        name = command[0].removeprefix("functions.").removesuffix(".app.lambda_handler")
        out[name or logical_id] = fn
    return out


def policy_statements(template: dict, role_logical_id: str) -> list[dict]:
    statements = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        roles = [r.get("Ref") for r in policy["Properties"]["Roles"]]
        if role_logical_id in roles:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def actions_of(statements: list[dict]) -> set[str]:
    found = set()
    for s in statements:
        acts = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        found |= set(acts)
    return found


def as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]


def role_of(fn: dict) -> str:
    return fn["Properties"]["Role"]["Fn::GetAtt"][0]


@pytest.mark.parametrize("variant", ["minimal", "everything"])
def test_both_configurations_synthesize_with_every_part(synths, variant):
    template = synths[variant]["template"]
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert {
        "AWS::StepFunctions::StateMachine",
        "AWS::SQS::Queue",
        "AWS::DynamoDB::Table",
        "AWS::S3::Bucket",
        "AWS::Events::Rule",
        "AWS::Lambda::EventSourceMapping",
        "Custom::S3BucketNotifications",
    } <= kinds
    assert set(functions_by_handler(template)) >= {
        "start_scan",
        "fetch_definitions",
        "scan_object",
        "apply_verdict",
        "record_audit",
        "record_failure",
        "update_definitions",
    }
    # Notify Webhook exists only where there is a webhook.
    assert ("notify_webhook" in functions_by_handler(template)) is (variant == "everything")
    assert set(template["Outputs"]) >= {
        "StateMachineArn",
        "AuditTableName",
        "ScanQueueUrl",
        "DeadLetterQueueUrl",
        "DefinitionsBucketName",
    }


# -- ingest ---------------------------------------------------------------------


def test_queue_and_dlq(minimal):
    queues = resources(minimal, "AWS::SQS::Queue")
    main = next(q for q in queues.values() if "RedrivePolicy" in q["Properties"])
    dlq = next(q for q in queues.values() if "RedrivePolicy" not in q["Properties"])
    assert main["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 5
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    starter = functions_by_handler(minimal)["start_scan"]
    assert main["Properties"]["VisibilityTimeout"] >= 6 * starter["Properties"]["Timeout"]
    # SSL only: each queue policy denies requests without TLS.
    for policy in resources(minimal, "AWS::SQS::QueuePolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny"
            and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
            for s in statements
        )


def test_starter_reports_batch_item_failures(minimal):
    mapping = one(minimal, "AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 10


def test_bursts_wait_in_the_queue_and_every_started_scan_has_a_scanner(minimal):
    mapping = one(minimal, "AWS::Lambda::EventSourceMapping")["Properties"]
    waves = mapping["ScalingConfig"]["MaximumConcurrency"]
    assert waves == 5
    scanner = functions_by_handler(minimal)["scan_object"]["Properties"]
    assert scanner["ReservedConcurrentExecutions"] == 50
    assert scanner["ReservedConcurrentExecutions"] >= waves * mapping["BatchSize"]


def test_notification_keeps_the_buckets_existing_rules(minimal):
    notification = one(minimal, "Custom::S3BucketNotifications")["Properties"]
    assert notification["BucketName"] == "acme-uploads"
    # Managed=false: CDK's handler merges with the rules the bucket already has.
    assert notification["Managed"] is False
    rules = notification["NotificationConfiguration"]["QueueConfigurations"]
    # New objects, and archived ones once a restore makes them readable.
    assert sorted(e for rule in rules for e in rule["Events"]) == [
        "s3:ObjectCreated:*",
        "s3:ObjectRestore:Completed",
    ]


def test_only_this_accounts_s3_may_send_to_the_queue(minimal):
    # A bucket ARN carries no account: aws:SourceArn alone would let a bucket of
    # the same name in another account fill the queue.
    statements = [
        s
        for policy in resources(minimal, "AWS::SQS::QueuePolicy").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if s.get("Principal") == {"Service": "s3.amazonaws.com"}
    ]
    [statement] = statements
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == SOURCE_ARN
    assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_webhook_url_reaches_only_notify_webhook(everything):
    for name, fn in functions_by_handler(everything).items():
        variables = fn["Properties"].get("Environment", {}).get("Variables", {})
        if name == "notify_webhook":
            assert variables["WEBHOOK_URL"] == "https://hooks.example.com/scan"
        else:
            assert "WEBHOOK_URL" not in variables, name


# -- workflow ---------------------------------------------------------------------


def is_rescan(props: dict) -> bool:
    return str(props.get("StateMachineName", "")).endswith("-rescan")


def state_machine(template: dict) -> dict:
    """The Standard scan machine (beside it: the Rescan machine, maybe the Express one)."""
    [props] = [
        r["Properties"]
        for r in resources(template, "AWS::StepFunctions::StateMachine").values()
        if not is_rescan(r["Properties"]) and r["Properties"]["StateMachineType"] == "STANDARD"
    ]
    return props


def test_state_machine_is_standard_logged_and_traced(minimal):
    sm = state_machine(minimal)
    assert sm["StateMachineType"] == "STANDARD"
    assert sm["TracingConfiguration"] == {"Enabled": True}
    assert sm["LoggingConfiguration"]["Level"] == "ALL"
    assert sm["LoggingConfiguration"]["IncludeExecutionData"] is True


@pytest.mark.parametrize(("variant", "webhook"), [("minimal", False), ("everything", True)])
def test_definition_is_the_asl_variant_inline_with_every_placeholder_substituted(
    synths, variant, webhook
):
    sm = state_machine(synths[variant]["template"])
    # Inline text (not Fn::Join, not an S3 asset): what is deployed is the file's variant.
    assert sm["DefinitionString"] == statemachines.variant_text(webhook)
    assert set(sm["DefinitionSubstitutions"]) == statemachines.placeholders(sm["DefinitionString"])


def rendered_asl(template: dict) -> dict:
    sm = state_machine(template)
    values = {
        k: v if isinstance(v, str) else json.dumps(v)
        for k, v in sm["DefinitionSubstitutions"].items()
    }
    text = sm["DefinitionString"]
    for key, value in values.items():
        text = text.replace("${" + key + "}", value.replace('"', "'"))
    assert not re.search(r"\$\{[A-Za-z0-9_]+\}", text)
    return json.loads(text)


@pytest.mark.parametrize("variant", ["minimal", "everything"])
def test_asl_targets_exist_and_tasks_retry(synths, variant):
    asl = rendered_asl(synths[variant]["template"])
    states = asl["States"]
    for name, state in states.items():
        targets = [state.get("Next"), state.get("Default")]
        targets += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
        for target in filter(None, targets):
            assert target in states, f"{name} -> {target}"
        if state["Type"] == "Task":
            assert state.get("Retry"), name


def test_the_webhook_state_follows_the_configuration(minimal, everything):
    assert "Notify Webhook" not in rendered_asl(minimal)["States"]
    assert rendered_asl(minimal)["States"]["Record Audit"]["End"] is True
    assert rendered_asl(everything)["States"]["Notify Webhook"]["End"] is True


def test_state_machine_invokes_exactly_its_functions(minimal):
    role = state_machine(minimal)["RoleArn"]["Fn::GetAtt"][0]
    invokes = [
        s for s in policy_statements(minimal, role) if s["Action"] == "lambda:InvokeFunction"
    ]
    targets = {r["Fn::GetAtt"][0] for s in invokes for r in as_list(s["Resource"])}
    fns = functions_by_handler(minimal)
    expected = {
        logical_id
        for logical_id, r in resources(minimal, "AWS::Lambda::Function").items()
        if r in [fns[n] for n in statemachines.functions(webhook=False)]
    }
    assert targets == expected


def test_function_sizes(minimal, everything):
    fns = functions_by_handler(minimal)
    scanner = fns["scan_object"]["Properties"]
    assert scanner["MemorySize"] == 3008
    assert scanner["Timeout"] == 900
    assert scanner["EphemeralStorage"] == {"Size": 6144}
    env = scanner["Environment"]["Variables"]
    assert (env["MAX_OBJECT_SIZE_MB"], env["MAX_SCAN_SIZE_MB"]) == ("1024", "2048")
    assert scanner["PackageType"] == "Image"
    for name in ("fetch_definitions", "apply_verdict", "record_audit", "start_scan"):
        assert fns[name]["Properties"]["MemorySize"] <= 512
    assert functions_by_handler(everything)["scan_object"]["Properties"]["MemorySize"] == 4096


def test_every_function_is_traced_and_configured(everything):
    for name, fn in functions_by_handler(everything).items():
        props = fn["Properties"]
        if name.startswith(("BucketNotifications", "AWSCDKTrigger")):
            continue  # CDK's own deploy-time handlers
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        env = props["Environment"]["Variables"]
        assert env["ENVIRONMENT"] == "prod"
        assert env["POWERTOOLS_SERVICE_NAME"] == name.replace("_", "-")
    env = functions_by_handler(everything)["apply_verdict"]["Properties"]["Environment"]
    assert env["Variables"]["QUARANTINE_BUCKET_NAME"] == "acme-quarantine"
    notify = functions_by_handler(everything)["notify_webhook"]["Properties"]["Environment"]
    assert notify["Variables"]["WEBHOOK_SECRET_ARN"] == SECRET_ARN
    assert notify["Variables"]["WEBHOOK_URL"] == "https://hooks.example.com/scan"


# -- definitions and audit ----------------------------------------------------------


def test_definitions_cache_bucket(minimal):
    bucket = one(minimal, "AWS::S3::Bucket")["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    policy = one(minimal, "AWS::S3::BucketPolicy")["Properties"]["PolicyDocument"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false"
        for s in policy["Statement"]
    )


def schedule_rule(template: dict) -> dict:
    """The definitions updater's schedule."""
    [rule] = [
        r["Properties"]
        for r in resources(template, "AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"] and "Input" not in r["Properties"]["Targets"][0]
    ]
    return rule


def test_updater_schedule(minimal, everything):
    assert schedule_rule(minimal)["ScheduleExpression"] == "rate(4 hours)"
    rule = schedule_rule(everything)
    assert rule["ScheduleExpression"] == "rate(1 hour)"
    updater_id = next(
        k
        for k, r in resources(everything, "AWS::Lambda::Function").items()
        if r is functions_by_handler(everything)["update_definitions"]
    )
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": [updater_id, "Arn"]}


def test_audit_table(minimal):
    table = one(minimal, "AWS::DynamoDB::Table")
    props = table["Properties"]
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["KeySchema"] == [
        {"AttributeName": "object", "KeyType": "HASH"},
        {"AttributeName": "scanId", "KeyType": "RANGE"},
    ]
    indexes = {i["IndexName"]: i["KeySchema"] for i in props["GlobalSecondaryIndexes"]}
    assert indexes["by-verdict"][0] == {"AttributeName": "verdict", "KeyType": "HASH"}
    assert indexes["failures"][0] == {"AttributeName": "failure", "KeyType": "HASH"}


def test_alarms(minimal, everything):
    names = {
        a["Properties"]["AlarmDescription"].rsplit(": ", 1)[1]: a["Properties"]
        for a in resources(minimal, "AWS::CloudWatch::Alarm").values()
    }
    assert set(names) == {
        "DeadLetters",
        "FailedScans",
        "UnrecordedFailures",
        "DefinitionsUpdateFailed",
        "DefinitionsCoolDown",
        "StaleDefinitions",
    }
    assert names["FailedScans"]["MetricName"] == "ExecutionsFailed"
    assert "AlarmActions" not in names["FailedScans"]
    for alarm in resources(everything, "AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == [TOPIC_ARN]


# -- least privilege ------------------------------------------------------------------

# Control-plane actions that AWS does not scope to a resource.
STAR_ALLOWED = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "s3:PutBucketNotification",  # CDK's notification handler, at deploy time
}


def all_statements(template: dict) -> list[dict]:
    out = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        out += policy["Properties"]["PolicyDocument"]["Statement"]
    return out


@pytest.mark.parametrize("variant", ["minimal", "everything", "express"])
def test_no_wildcard_service_actions_or_data_actions_on_star(synths, variant):
    for statement in all_statements(synths[variant]["template"]):
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        for action in actions:
            assert action not in ("s3:*", "dynamodb:*", "states:*", "*"), statement
            assert not action.endswith(":*"), statement
        if statement.get("Resource") == "*":
            assert set(actions) <= STAR_ALLOWED, statement


def statements_for(template: dict, name: str) -> list[dict]:
    return policy_statements(template, role_of(functions_by_handler(template)[name]))


def test_each_function_gets_only_what_it_needs(everything):
    data = lambda name: actions_of(statements_for(everything, name)) - STAR_ALLOWED  # noqa: E731
    assert data("record_audit") == {"dynamodb:PutItem", "events:PutEvents"}
    assert data("record_failure") == {
        "states:GetExecutionHistory",
        "states:DescribeExecution",
        "states:ListExecutions",
        "dynamodb:PutItem",
        "dynamodb:GetItem",
        "dynamodb:Query",  # the reconciliation: an Express run's items, by name
        "s3:ListBucket",
        "s3:ListBucketVersions",
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:GetObjectTagging",
        "s3:GetObjectVersionTagging",
        "s3:PutObjectTagging",
        "s3:PutObjectVersionTagging",
        "lambda:InvokeFunction",  # Notify Webhook, for the scan.failed notice
        "events:PutEvents",  # the failed run's Object Scan Result
        "sqs:SendMessage",  # its own DLQ, as the on-failure destination
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }
    assert data("start_scan") >= {"states:StartExecution"}
    assert not {a for a in data("start_scan") if a.startswith(("s3:", "dynamodb:"))}
    assert data("notify_webhook") == {"secretsmanager:GetSecretValue"}
    assert data("scan_object") == {
        "dynamodb:UpdateItem",  # the CDN lease item only (test_definitions_stack.py)
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:ListBucket",
        "s3:ListBucketVersions",
        "kms:Decrypt",
    }
    assert "s3:PutObject" not in {
        a
        for s in statements_for(everything, "apply_verdict")
        if s["Resource"] == f"{SOURCE_ARN}/*"
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    quarantine_writes = [
        s
        for s in statements_for(everything, "apply_verdict")
        if s["Resource"] == f"{QUARANTINE_ARN}/*"
    ]
    assert actions_of(quarantine_writes) == {
        "s3:PutObject",
        "s3:PutObjectTagging",
        "s3:GetObjectTagging",
        "s3:GetObjectVersionTagging",  # a retry looks for its copy among every version
    }
    assert data("update_definitions") == {
        "dynamodb:UpdateItem",  # the CDN lease item only (test_definitions_stack.py)
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:PutObject",
        "s3:ListBucket",
        # everything turns the retro-scan on: the by-verdict Query, the scan queue
        "dynamodb:Query",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }


def grants(statements: list[dict]) -> set[tuple[str, str]]:
    """(action, resource) pairs, each resource written as cdk-nag writes it."""
    from stacks.nag import flatten_reference

    return {
        (action, flatten_reference(resource))
        for s in statements
        if s["Effect"] == "Allow"
        for action in as_list(s["Action"])
        for resource in as_list(s["Resource"])
    }


def logical_id_of(template: dict, kind: str, path_suffix: str) -> str:
    [logical_id] = [
        k
        for k, r in resources(template, kind).items()
        if r.get("Metadata", {}).get("aws:cdk:path", "").endswith(path_suffix)
    ]
    return logical_id


@pytest.mark.parametrize(
    ("variant", "region", "account"),
    [("minimal", "us-east-1", "<AWS::AccountId>"), ("everything", REGION, ACCOUNT)],
)
def test_the_recorder_reads_the_history_of_any_execution_of_the_scan_machine(
    synths, variant, region, account
):
    # The grant once named "arn:...:execution" (an Arn.format dict jsii emptied),
    # which matches no execution: every failure's recording would be AccessDenied.
    template = synths[variant]["template"]
    machine = logical_id_of(
        template, "AWS::StepFunctions::StateMachine", "Workflow/ScanObjectStateMachine/Resource"
    )
    executions = f"arn:aws:states:{region}:{account}:execution:<{machine}.Name>:*"
    held = grants(statements_for(template, "record_failure"))
    assert ("states:GetExecutionHistory", executions) in held
    assert ("states:DescribeExecution", executions) in held
    assert {
        g for g in held if g[0] in ("states:GetExecutionHistory", "states:DescribeExecution")
    } == {
        ("states:GetExecutionHistory", executions),
        ("states:DescribeExecution", executions),
    }


def test_kms_decrypt_on_the_source_key(minimal, everything):
    for name in ("scan_object", "apply_verdict"):
        kms = [s for s in statements_for(everything, name) if s["Action"] == "kms:Decrypt"]
        assert [s["Resource"] for s in kms] == [KMS_KEY_ARN]
        assert not [s for s in statements_for(minimal, name) if s["Action"] == "kms:Decrypt"]
    quarantine_kms = [
        s
        for s in statements_for(everything, "apply_verdict")
        if s["Resource"] == QUARANTINE_KMS_ARN
    ]
    assert actions_of(quarantine_kms) == {"kms:GenerateDataKey", "kms:Decrypt"}


# -- checks that AWS engineers run ----------------------------------------------------------


def test_cdk_nag_runs_on_every_synth_and_fails_it(tmp_path):
    # Both configurations synthesized with exit 0 (the fixture): no unacknowledged
    # finding. This shows the checks really run: one non-compliant resource added
    # to the same app (a queue without SSL enforcement) fails the synth.
    from aws_cdk import aws_sqs as sqs

    from stacks.app import build_app
    from stacks.config import load_deploy_config

    app, stack = build_app(load_deploy_config({"SOURCE_BUCKET_ARN": SOURCE_ARN}), str(tmp_path))
    sqs.Queue(stack, "NotCompliant", encryption=sqs.QueueEncryption.SQS_MANAGED)
    with pytest.raises(Exception, match="ValidationFailed") as failure:
        app.synth()
    assert "AwsSolutions-SQS4" in str(failure.value)
    assert "S3VirusScanner-dev/NotCompliant" in str(failure.value)
    # ...and nothing of the scanner's own resources is among the findings.
    assert str(failure.value).count("\n   S3VirusScanner-dev/") == str(failure.value).count(
        "\n   S3VirusScanner-dev/NotCompliant"
    )


# cfn-lint rules we ignore, each with its reason.
CFN_LINT_IGNORED: dict[str, str] = {
    "W3005": "CDK adds an explicit DependsOn next to the Ref/GetAtt it already implies "
    "(function -> role, notification -> queue); harmless and not ours to change.",
}


@pytest.mark.parametrize("variant", ["minimal", "everything", "express"])
def test_cfn_lint_passes(synths, variant):
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(
        synths[variant]["path"],
        config=ManualArgs(regions=["us-east-1"], ignore_checks=list(CFN_LINT_IGNORED)),
    )
    assert [f"{m.rule.id} {m.message} ({m.path})" for m in matches] == []


def test_cfn_lint_sees_the_state_machine_definition(synths, tmp_path):
    # GIVEN the synthesized template with a malformed Retry in one state
    from cfnlint.api import ManualArgs, lint_file

    template = json.loads(json.dumps(synths["minimal"]["template"]))
    sm = state_machine(template)
    asl = json.loads(sm["DefinitionString"])
    asl["States"]["Scan Object"]["Retry"] = "often"
    sm["DefinitionString"] = json.dumps(asl)
    broken = tmp_path / "broken.template.json"
    broken.write_text(json.dumps(template))

    # THEN cfn-lint reports it: the inline definition really is checked (E3601).
    # (E3601 checks structure, not Next targets: test_asl_targets_exist... does that.)
    matches = lint_file(broken, config=ManualArgs(regions=["us-east-1"]))
    assert any(m.rule.id == "E3601" and "often" in m.message for m in matches), [
        m.message for m in matches
    ]


# -- the access gate ------------------------------------------------------------------


def source_bucket_policies(template: dict) -> list[dict]:
    return [
        r["Properties"]
        for r in resources(template, "AWS::S3::BucketPolicy").values()
        if r["Properties"]["Bucket"] == "acme-uploads"
    ]


def test_the_access_gate_is_attached_only_when_asked(minimal, everything):
    assert source_bucket_policies(minimal) == []
    [policy] = source_bucket_policies(everything)
    assert policy["Bucket"] == "acme-uploads"
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert set(statements) == {*access_gate.SIDS, "S3VirusScannerTlsOnly"}
    by_handler = functions_by_handler(everything)
    role = {name: {"Fn::GetAtt": [role_of(by_handler[name]), "Arn"]} for name in by_handler}
    readers = statements[access_gate.READ_SID]["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    assert role["scan_object"] in readers
    assert role["apply_verdict"] in readers
    assert ADMIN_ARN in readers
    taggers = statements[access_gate.SCAN_TAGS_SID]["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    assert taggers == [role["apply_verdict"], role["record_failure"]]
    assert statements[access_gate.READ_SID]["Resource"] == f"{SOURCE_ARN}/*"


def test_the_roles_the_gate_names_are_stack_outputs(minimal):
    # scanctl policy builds the same statements from them (the gate off, merged by hand).
    assert {"AccessGateReaderRoleArns", "AccessGateTaggingRoleArns"} <= set(minimal["Outputs"])


# -- failures ------------------------------------------------------------------------------


def test_a_failed_execution_reaches_the_recorder_through_eventbridge(minimal):
    [rule] = [
        r["Properties"]
        for r in resources(minimal, "AWS::Events::Rule").values()
        if "EventPattern" in r["Properties"]
    ]
    # And, since EventBridge delivers best effort, a schedule catches up hourly.
    [schedule] = [
        r["Properties"]
        for r in resources(minimal, "AWS::Events::Rule").values()
        if r["Properties"].get("ScheduleExpression") == "rate(1 hour)"
    ]
    assert json.loads(schedule["Targets"][0]["Input"]) == {"reconcile": {"hours": 3}}
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.states"]
    assert pattern["detail-type"] == ["Step Functions Execution Status Change"]
    assert pattern["detail"]["$or"] == [
        {"status": ["FAILED", "TIMED_OUT", "ABORTED"]},
        {"status": ["SUCCEEDED"], "redriveCount": [{"numeric": [">", 0]}]},
    ]
    [sm_id] = [
        k
        for k, r in resources(minimal, "AWS::StepFunctions::StateMachine").items()
        if r["Properties"] is state_machine(minimal)
    ]
    assert pattern["detail"]["stateMachineArn"] == [{"Ref": sm_id}]
    [target] = rule["Targets"]
    recorder = functions_by_handler(minimal)["record_failure"]
    recorder_id = next(
        k for k, r in resources(minimal, "AWS::Lambda::Function").items() if r is recorder
    )
    assert target["Arn"] == {"Fn::GetAtt": [recorder_id, "Arn"]}
    # Its own DLQ and retry policy, and the same DLQ for the function's own failures.
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 8
    dlq = target["DeadLetterConfig"]["Arn"]
    [invoke_config] = resources(minimal, "AWS::Lambda::EventInvokeConfig").values()
    assert invoke_config["Properties"]["MaximumRetryAttempts"] == 2
    assert invoke_config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == dlq
    # And an alarm watches that DLQ.
    watched = [
        a["Properties"]
        for a in resources(minimal, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["AlarmDescription"].endswith("UnrecordedFailures")
    ]
    [alarm] = watched
    assert alarm["Dimensions"][0]["Value"]["Fn::GetAtt"][0] == dlq["Fn::GetAtt"][0]


def test_the_recorder_sends_notices_only_through_notify_webhook(minimal, everything):
    variables = lambda t: functions_by_handler(t)["record_failure"]["Properties"]["Environment"][  # noqa: E731
        "Variables"
    ]
    assert "NOTIFY_WEBHOOK_FUNCTION" not in variables(minimal)
    assert "NOTIFY_WEBHOOK_FUNCTION" in variables(everything)
    assert "WEBHOOK_URL" not in variables(everything)


# -- WORKFLOW_TYPE=EXPRESS ---------------------------------------------------------------------


def machines(template: dict) -> dict[str, dict]:
    """The scan machines by type."""
    return {
        r["Properties"]["StateMachineType"]: r["Properties"]
        for r in resources(template, "AWS::StepFunctions::StateMachine").values()
        if not is_rescan(r["Properties"])
    }


def test_express_deploys_both_machines_and_logs_every_express_execution(express):
    both = machines(express)
    assert set(both) == {"STANDARD", "EXPRESS"}
    logging = both["EXPRESS"]["LoggingConfiguration"]
    assert logging["Level"] == "ALL"
    assert logging["IncludeExecutionData"] is True
    [destination] = logging["Destinations"]
    group_id = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    assert express["Resources"][group_id]["Properties"]["RetentionInDays"] == 90
    # The deployed Express text is the derived variant, failures recorded inside it.
    assert both["EXPRESS"]["DefinitionString"] == statemachines.variant_text(True, express=True)
    assert both["STANDARD"]["DefinitionString"] == statemachines.variant_text(True)


def test_an_express_failure_nothing_could_keep_raises_an_alarm_from_its_log(express):
    # The last resort (recorder and its DLQ both failed) ends with FailureNotKept,
    # which a metric filter on the Express log group counts and an alarm watches.
    group = next(
        name
        for name, r in resources(express, "AWS::Logs::LogGroup").items()
        if "ExpressExecutionLogs" in name
    )
    [metric_filter] = resources(express, "AWS::Logs::MetricFilter").values()
    props = metric_filter["Properties"]
    assert props["LogGroupName"] == {"Ref": group}
    assert '$.type = "ExecutionFailed"' in props["FilterPattern"]
    assert '$.details.error = "FailureNotKept"' in props["FilterPattern"]
    [transform] = props["MetricTransformations"]
    names = {
        a["Properties"]["AlarmDescription"].rsplit(": ", 1)[1]: a["Properties"]
        for a in resources(express, "AWS::CloudWatch::Alarm").values()
    }
    assert names["UnkeptExpressFailures"]["MetricName"] == transform["MetricName"]
    assert names["FailedExpressScans"]["MetricName"] == "ExecutionsFailed"


def test_the_starter_routes_by_size_to_either_machine(express):
    starter = functions_by_handler(express)["start_scan"]
    variables = starter["Properties"]["Environment"]["Variables"]
    assert variables["EXPRESS_MAX_OBJECT_MB"] == "64"
    # Each variable names the machine of its type (a Ref is a state machine's ARN).
    by_type = {
        r["Properties"]["StateMachineType"]: {"Ref": logical_id}
        for logical_id, r in resources(express, "AWS::StepFunctions::StateMachine").items()
        if not is_rescan(r["Properties"])
    }
    assert variables["EXPRESS_STATE_MACHINE_ARN"] == by_type["EXPRESS"]
    assert variables["STATE_MACHINE_ARN"] == by_type["STANDARD"]
    # ... and the starter may start exactly those two.
    started = [
        resource
        for s in statements_for(express, "start_scan")
        if s["Action"] == "states:StartExecution"
        for resource in as_list(s["Resource"])
    ]
    assert sorted(map(json.dumps, started)) == sorted(map(json.dumps, by_type.values()))


def test_standard_is_the_default_and_deploys_one_machine(minimal):
    assert set(machines(minimal)) == {"STANDARD"}


# -- rescans and the retro-scan ----------------------------------------------------------------


def rescan_machine(template: dict) -> dict:
    [props] = [
        r["Properties"]
        for r in resources(template, "AWS::StepFunctions::StateMachine").values()
        if is_rescan(r["Properties"])
    ]
    return props


def test_every_deployment_has_a_rescan_machine_scanctl_can_find(minimal):
    rescan = rescan_machine(minimal)
    # A fixed name: `scanctl rescan` finds it from the stack name alone.
    assert rescan["StateMachineName"] == "S3VirusScanner-dev-rescan"
    assert rescan["StateMachineType"] == "STANDARD"
    assert json.loads(rescan["DefinitionString"]) == json.loads(statemachines.rescan_text())
    assert set(rescan["DefinitionSubstitutions"]) == statemachines.placeholders(
        statemachines.rescan_text()
    )
    assert rescan["DefinitionSubstitutions"]["SourceBucketName"] == "acme-uploads"
    [logical_id] = [
        k
        for k, r in resources(minimal, "AWS::StepFunctions::StateMachine").items()
        if is_rescan(r["Properties"])
    ]
    assert minimal["Outputs"]["RescanStateMachineArn"]["Value"] == {"Ref": logical_id}


def test_the_rescan_machine_lists_the_bucket_and_reads_nothing_else(minimal, express):
    role = rescan_machine(minimal)["RoleArn"]["Fn::GetAtt"][0]
    assert actions_of(policy_statements(minimal, role)) - STAR_ALLOWED == {
        "s3:ListBucket",
        "lambda:InvokeFunction",
        "states:StartExecution",
        "states:DescribeExecution",
        "states:StopExecution",
    }
    # With an inventory bucket configured, its reports (and only those) too.
    role = rescan_machine(express)["RoleArn"]["Fn::GetAtt"][0]
    reads = [s for s in policy_statements(express, role) if s["Action"] == "s3:GetObject"]
    assert [s["Resource"] for s in reads] == [f"{INVENTORY_ARN}/*"]


def test_a_rescan_batch_reads_tags_and_sends_to_the_scan_queue_only(minimal):
    assert actions_of(statements_for(minimal, "rescan_batch")) - STAR_ALLOWED == {
        "s3:GetBucketPolicy",  # is the access gate there: can the tags be trusted?
        "dynamodb:Query",  # did one of our scans write them?
        "s3:GetObjectTagging",
        "s3:GetObjectVersionTagging",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }


def test_the_retro_scan_is_off_unless_configured(minimal, express):
    updater = lambda t: functions_by_handler(t)["update_definitions"]  # noqa: E731
    assert (
        "RETROSCAN_AFTER_UPDATE_HOURS"
        not in updater(minimal)["Properties"]["Environment"]["Variables"]
    )
    variables = updater(express)["Properties"]["Environment"]["Variables"]
    assert variables["RETROSCAN_AFTER_UPDATE_HOURS"] == "24"
    assert {"SCAN_QUEUE_URL", "DDB_TABLE_NAME", "SOURCE_BUCKET_NAME"} <= set(variables)
    queried = [
        s for s in statements_for(express, "update_definitions") if s["Action"] == "dynamodb:Query"
    ]
    [query] = queried
    assert query["Resource"]["Fn::Join"][1][-1] == "/index/by-verdict"


# -- the dashboard ---------------------------------------------------------------------------


def dashboard_text(template: dict) -> str:
    [dashboard] = resources(template, "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    return "".join(p if isinstance(p, str) else json.dumps(p) for p in parts)


@pytest.mark.parametrize("variant", ["minimal", "express"])
def test_a_dashboard_shows_verdicts_times_failures_queues_definitions_and_throttles(
    synths, variant
):
    template = synths[variant]["template"]
    text = dashboard_text(template)
    for metric in (
        '"Verdict_clean"',
        '"Verdict_infected"',
        '"Verdict_unscannable"',
        '"ScanDuration"',
        '"stat":"p95"',
        '"stat":"p50"',
        '"ExecutionsFailed"',
        '"ApproximateNumberOfMessagesVisible"',
        '"DefinitionsAgeHours"',
        '"Throttles"',
        '"ThrottledEvents"',
    ):
        assert metric in text, metric
    # Both machines' executions with Express; its name is an output.
    assert text.count('"ExecutionsFailed"') == (2 if variant == "express" else 1)
    assert template["Outputs"]["DashboardName"]["Value"] == "S3VirusScanner-dev-scanner"


# -- results on EventBridge ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["record_audit", "record_failure"])
def test_results_go_to_the_configured_bus_or_the_default_one(minimal, everything, name):
    def puts(template):
        return [s for s in statements_for(template, name) if s["Action"] == "events:PutEvents"]

    [custom] = puts(everything)
    assert custom["Resource"] == BUS_ARN
    variables = functions_by_handler(everything)[name]["Properties"]["Environment"]["Variables"]
    assert variables["EVENT_BUS_ARN"] == BUS_ARN
    [default] = puts(minimal)
    assert "event-bus/default" in json.dumps(default["Resource"])
    assert (
        "EVENT_BUS_ARN"
        not in (functions_by_handler(minimal)[name]["Properties"]["Environment"]["Variables"])
    )
