"""The IAM check's own parts: its operation table against AWS's reference, its evaluator.

The table (tests/iamcheck/operations.py) says which action, resource and
condition keys each operation needs. Each entry is checked here against the
Service Authorization Reference as parliament packages it: the action exists
and the resource is one of the action's resource types (the table keeps only
the condition keys the reference lists for the action). A typo in the table
would otherwise make the check compare against an action no policy could grant.
"""

from __future__ import annotations

import re

import pytest

from scanctl.harness.principals import FUNCTION, AwsCall, Principal
from tests.iamcheck import operations, policy

ACCOUNT, REGION = "123456789012", "us-east-1"
QUEUE = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/scan-queue"
WHERE = operations.Where(
    account=ACCOUNT,
    region=REGION,
    queue_arns={QUEUE: f"arn:aws:sqs:{REGION}:{ACCOUNT}:scan-queue"},
    function_arns={"notify-webhook": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:notify-webhook"},
)
OBJECT = {"Bucket": "uploads", "Key": "a/b c.txt"}
VERSION = {**OBJECT, "VersionId": "v1"}
EXECUTION = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:scan-object:run-1"
MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:scan-object"
TABLE = {"TableName": "scan-audit"}

# One request per operation, as the code sends it (several where the actions differ).
SAMPLES: dict[tuple[str, str], list[dict]] = {
    ("s3", "GetObject"): [OBJECT, VERSION],
    ("logs", "FilterLogEvents"): [{"logGroupName": "/aws/vendedlogs/states/express-scan"}],
    ("s3", "HeadObject"): [OBJECT, VERSION],
    ("s3", "GetObjectTagging"): [OBJECT, VERSION],
    ("s3", "PutObjectTagging"): [
        {**VERSION, "Tagging": {"TagSet": [{"Key": "scan-status", "Value": "clean"}]}}
    ],
    ("s3", "DeleteObjectTagging"): [OBJECT, VERSION],
    ("s3", "DeleteObject"): [OBJECT, VERSION],
    ("s3", "GetObjectRetention"): [VERSION],
    ("s3", "GetObjectLegalHold"): [VERSION],
    ("s3", "PutObject"): [OBJECT, {**OBJECT, "Tagging": "team=x"}],
    ("s3", "CopyObject"): [
        {
            "Bucket": "quarantine",
            "Key": "a",
            "CopySource": {"Bucket": "uploads", "Key": "a", "VersionId": "v1"},
            "TaggingDirective": "REPLACE",
            "Tagging": "scan-status=infected",
        },
        {"Bucket": "quarantine", "Key": "a", "CopySource": "uploads/a"},
    ],
    ("s3", "CreateMultipartUpload"): [OBJECT],
    ("s3", "UploadPart"): [OBJECT],
    ("s3", "CompleteMultipartUpload"): [OBJECT],
    ("s3", "AbortMultipartUpload"): [OBJECT],
    ("s3", "ListObjectsV2"): [{"Bucket": "uploads", "Prefix": "a/"}],
    ("s3", "ListObjects"): [{"Bucket": "uploads"}],
    ("s3", "HeadBucket"): [{"Bucket": "uploads"}],
    ("s3", "ListObjectVersions"): [{"Bucket": "uploads", "Prefix": "a"}],
    ("s3", "GetBucketVersioning"): [{"Bucket": "uploads"}],
    ("s3", "GetBucketPolicy"): [{"Bucket": "uploads"}],
    ("s3", "GetObjectLockConfiguration"): [{"Bucket": "uploads"}],
    **{
        ("sqs", op): [{"QueueUrl": QUEUE}]
        for op in (
            "SendMessage",
            "SendMessageBatch",
            "ReceiveMessage",
            "DeleteMessage",
            "DeleteMessageBatch",
            "ChangeMessageVisibility",
            "ChangeMessageVisibilityBatch",
            "GetQueueAttributes",
        )
    },
    ("sqs", "GetQueueUrl"): [{"QueueName": "scan-queue"}],
    ("dynamodb", "PutItem"): [{**TABLE, "Item": {"object": {"S": "s3://uploads/a"}}}],
    ("dynamodb", "GetItem"): [{**TABLE, "Key": {"object": {"S": "s3://uploads/a"}}}],
    ("dynamodb", "UpdateItem"): [{**TABLE, "Key": {"object": {"S": "lease"}}}],
    ("dynamodb", "DeleteItem"): [{**TABLE, "Key": {"object": {"S": "lease"}}}],
    ("dynamodb", "Query"): [
        {
            **TABLE,
            "KeyConditionExpression": "#o = :o",
            "ExpressionAttributeNames": {"#o": "object"},
            "ExpressionAttributeValues": {":o": {"S": "s3://uploads/a"}},
        },
        {**TABLE, "IndexName": "by-verdict", "KeyConditionExpression": "verdict = :v"},
    ],
    ("stepfunctions", "StartExecution"): [{"stateMachineArn": MACHINE}],
    ("stepfunctions", "StartSyncExecution"): [{"stateMachineArn": MACHINE}],
    ("stepfunctions", "ListExecutions"): [{"stateMachineArn": MACHINE}],
    ("stepfunctions", "DescribeExecution"): [{"executionArn": EXECUTION}],
    ("stepfunctions", "GetExecutionHistory"): [{"executionArn": EXECUTION}],
    ("stepfunctions", "StopExecution"): [{"executionArn": EXECUTION}],
    ("stepfunctions", "RedriveExecution"): [{"executionArn": EXECUTION}],
    ("lambda", "Invoke"): [{"FunctionName": "notify-webhook"}],
    ("events", "PutEvents"): [{"Entries": [{"Source": "s3-virus-scanner", "DetailType": "x"}]}],
    ("secretsmanager", "GetSecretValue"): [
        {"SecretId": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:hook-AbCdEf"}
    ],
    ("cloudwatch", "PutMetricData"): [{"Namespace": "S3VirusScanner"}],
}


def _arn_pattern(template: str) -> re.Pattern:
    parts = re.split(r"\$\{[A-Za-z]+\}", template)
    return re.compile(".+".join(re.escape(p) for p in parts) + "$")


def test_every_operation_has_a_sample():
    assert set(SAMPLES) == set(operations.OPERATIONS)


@pytest.mark.parametrize(("service", "operation"), sorted(operations.OPERATIONS))
def test_each_entry_agrees_with_the_service_authorization_reference(service, operation):
    services = operations.reference()
    for params in SAMPLES[(service, operation)]:
        call = AwsCall(Principal(FUNCTION, "x"), service, operation, params, REGION)
        call.existing_tags = {"scan-status": "clean"} if service == "s3" else None
        call.facts["copySourceTags"] = {"scan-status": "clean"}
        for need in operations.needs(call, WHERE):
            prefix, name = need.action.split(":")
            [privilege] = [p for p in services[prefix]["privileges"] if p["privilege"] == name]
            types = [t["resource_type"].rstrip("*") for t in privilege["resource_types"]]
            arns = [r["arn"] for r in services[prefix]["resources"] if r["resource"] in types]
            if need.resource == "*":
                assert "" in types, f"{need.action} takes a resource, not *"
            else:
                assert any(_arn_pattern(a).match(need.resource) for a in arns), (
                    f"{need.action}: {need.resource} is none of {arns}"
                )


def test_the_condition_keys_the_access_gate_reads_reach_its_actions():
    # The gate's Denies read these keys; the table must carry them to these actions.
    def context(operation: str, params: dict) -> dict[str, set[str]]:
        call = AwsCall(Principal(FUNCTION, "x"), "s3", operation, params, REGION)
        call.existing_tags = {"scan-status": "clean"}
        call.facts["copySourceTags"] = {"scan-status": "clean"}
        return {n.action: set(n.context) for n in operations.needs(call, WHERE)}

    assert (
        "s3:ExistingObjectTag/scan-status" in context("GetObject", VERSION)["s3:GetObjectVersion"]
    )
    [tagging] = SAMPLES[("s3", "PutObjectTagging")]
    assert (
        "s3:RequestObjectTagKeys"
        in context("PutObjectTagging", tagging)["s3:PutObjectVersionTagging"]
    )
    copied = context("CopyObject", SAMPLES[("s3", "CopyObject")][0])
    assert {"s3:x-amz-copy-source", "s3:RequestObjectTagKeys"} <= copied["s3:PutObject"]
    assert "s3:ExistingObjectTag/scan-status" in copied["s3:GetObjectVersion"]
    # ... and no key an action does not have (no object tags for a DeleteObject).
    assert context("DeleteObject", VERSION)["s3:DeleteObjectVersion"] == {"s3:versionid"}


def test_an_operation_outside_the_table_fails_the_check():
    call = AwsCall(Principal(FUNCTION, "scan_object"), "s3", "PutBucketPolicy", {}, REGION)
    with pytest.raises(operations.UnknownOperation, match="s3:PutBucketPolicy"):
        operations.needs(call, WHERE)


# -- the evaluator ------------------------------------------------------------------------------

ROLE = f"arn:aws:iam::{ACCOUNT}:role/Scanner"
OTHER = f"arn:aws:iam::{ACCOUNT}:role/Other"
READ = policy.Request("s3:GetObject", "arn:aws:s3:::uploads/a", ROLE, {"aws:PrincipalArn": ROLE})
ALLOW_ALL_READS = [{"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::uploads/*"}]
GATE = {
    "Effect": "Deny",
    "Principal": "*",
    "Action": ["s3:GetObject", "s3:GetObjectVersion"],
    "Resource": "arn:aws:s3:::uploads/*",
    "Condition": {
        "StringNotEquals": {"s3:ExistingObjectTag/scan-status": "clean"},
        "ArnNotLike": {"aws:PrincipalArn": [ROLE]},
    },
}


def with_context(request: policy.Request, **context: object) -> policy.Request:
    return policy.Request(
        request.action, request.resource, request.principal_arn, {**request.context, **context}
    )


def test_an_allow_needs_action_and_resource():
    assert policy.decide(READ, ALLOW_ALL_READS).allowed
    other_bucket = policy.Request("s3:GetObject", "arn:aws:s3:::other/a", ROLE, {})
    assert not policy.decide(other_bucket, ALLOW_ALL_READS).allowed
    put = policy.Request("s3:PutObject", "arn:aws:s3:::uploads/a", ROLE, {})
    assert not policy.decide(put, ALLOW_ALL_READS).allowed


def test_the_gate_denies_a_reader_it_does_not_exempt_unless_the_object_is_clean():
    stranger = policy.Request(
        "s3:GetObject", "arn:aws:s3:::uploads/a", OTHER, {"aws:PrincipalArn": OTHER}
    )
    # No tag at all: StringNotEquals matches a missing key, so the Deny applies.
    decision = policy.decide(stranger, ALLOW_ALL_READS, [GATE])
    assert not decision.allowed
    assert decision.where == "bucket policy"
    assert policy.decide(
        with_context(stranger, **{"s3:ExistingObjectTag/scan-status": "clean"}),
        ALLOW_ALL_READS,
        [GATE],
    ).allowed
    # The scanner's own role is exempt whatever the tag says.
    assert policy.decide(READ, ALLOW_ALL_READS, [GATE]).allowed


def test_set_operators_and_null():
    deny_scan_tags = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObjectTagging",
        "Resource": "*",
        "Condition": {"ForAnyValue:StringLike": {"s3:RequestObjectTagKeys": ["scan-*"]}},
    }
    allow = [{"Effect": "Allow", "Action": "s3:PutObjectTagging", "Resource": "*"}]
    tagging = policy.Request("s3:PutObjectTagging", "arn:aws:s3:::uploads/a", OTHER, {})
    assert policy.decide(tagging, allow, [deny_scan_tags]).allowed  # no keys: ForAnyValue false
    forged = with_context(tagging, **{"s3:RequestObjectTagKeys": ["team", "scan-status"]})
    assert not policy.decide(forged, allow, [deny_scan_tags]).allowed
    only_team = with_context(tagging, **{"s3:RequestObjectTagKeys": ["team"]})
    assert policy.decide(only_team, allow, [deny_scan_tags]).allowed
    copies = {**deny_scan_tags, "Condition": {"Null": {"s3:x-amz-copy-source": "false"}}}
    assert policy.decide(tagging, allow, [copies]).allowed
    copy = with_context(tagging, **{"s3:x-amz-copy-source": "other/a"})
    assert not policy.decide(copy, allow, [copies]).allowed


def test_condition_key_names_are_case_insensitive():
    # IAM: "Context key names are not case-sensitive"; a Deny keyed in another
    # spelling still applies.
    spelled = {
        **GATE,
        "Condition": {
            "StringNotEquals": {"S3:existingObjectTag/scan-status": "clean"},
            "ArnNotLike": {"AWS:PrincipalArn": [ROLE]},
        },
    }
    stranger = policy.Request(
        "s3:GetObject", "arn:aws:s3:::uploads/a", OTHER, {"aws:PrincipalArn": OTHER}
    )
    assert not policy.decide(stranger, ALLOW_ALL_READS, [spelled]).allowed
    assert policy.decide(
        with_context(stranger, **{"s3:ExistingObjectTag/scan-status": "clean"}),
        ALLOW_ALL_READS,
        [spelled],
    ).allowed


def test_an_invoke_of_a_version_or_alias_names_it():
    call = AwsCall(
        Principal(FUNCTION, "x"),
        "lambda",
        "Invoke",
        {"FunctionName": "notify-webhook", "Qualifier": "live"},
        REGION,
    )
    [need] = operations.needs(call, WHERE)
    assert need.resource == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:notify-webhook:live"


def test_a_read_that_found_nothing_also_needs_the_listing():
    call = AwsCall(Principal(FUNCTION, "x"), "s3", "HeadObject", dict(VERSION), REGION)
    call.facts["notFound"] = True
    assert [(n.action, n.resource) for n in operations.needs(call, WHERE)] == [
        ("s3:GetObjectVersion", "arn:aws:s3:::uploads/a/b c.txt"),
        ("s3:ListBucket", "arn:aws:s3:::uploads"),
    ]


def test_an_operator_it_does_not_know_is_an_error_not_a_pass():
    odd = {**GATE, "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01"}}}
    with pytest.raises(policy.UnsupportedCondition):
        policy.decide(READ, ALLOW_ALL_READS, [odd])
