"""What IAM authorizes for each AWS operation the code calls: one table.

``needs(call, where)`` turns one recorded call into the permissions AWS checks
for it: the IAM action, the resource ARN it touches, and the condition keys
the request carries. An operation that is not in ``OPERATIONS`` fails the
check (``UnknownOperation``): a new call cannot pass unexamined.

Sources: the Service Authorization Reference (actions, resource types,
condition keys) and each API's "Permissions" section. Where the API needs
more than one action (CopyObject reads a source and writes a destination;
PutObject with tags is also s3:PutObjectTagging), each is a need of its own.

Not covered (docs/architecture.md lists these too): what a service does with
its own credentials or on our behalf (the KMS calls S3 makes for SSE-KMS
objects, ECR image pulls, CloudWatch Logs and X-Ray writes, EventBridge's and
S3's deliveries to our queue and functions, which resource policies allow),
and organisation policies (SCPs), permission boundaries and VPC endpoint
policies, which the stack does not create.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from functions.record_audit.schema import PARTITION_KEY
from scanctl.harness.principals import AwsCall


@dataclass(frozen=True)
class Where:
    """The deployment's account and region, and its queues and functions by name."""

    account: str
    region: str
    queue_arns: dict[str, str]  # queue URL -> queue ARN
    function_arns: dict[str, str]  # function name -> function ARN


@dataclass
class Need:
    action: str
    resource: str
    context: dict[str, Any] = field(default_factory=dict)  # condition key -> value(s)


class UnknownOperation(Exception):
    """An operation this table does not describe yet."""


Rule = Callable[[AwsCall, Where], list[Need]]


# -- S3 ----------------------------------------------------------------------------------------


def _object_arn(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


def _bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


def _versioned(params: dict[str, Any], plain: str, versioned: str) -> str:
    return versioned if params.get("VersionId") else plain


def _tags_context(prefix: str, tags: dict[str, str] | None) -> dict[str, Any]:
    return {f"{prefix}/{k}": v for k, v in (tags or {}).items()}


def _request_tags(tags: dict[str, str]) -> dict[str, Any]:
    return {"s3:RequestObjectTagKeys": list(tags), **_tags_context("s3:RequestObjectTag", tags)}


def _url_tags(tagging: str | None) -> dict[str, str]:
    return dict(parse_qsl(tagging or "", keep_blank_values=True))


def _object_call(plain: str, versioned: str, not_found_needs_list: bool = False) -> Rule:
    def rule(call: AwsCall, where: Where) -> list[Need]:
        p = call.params
        context = _tags_context("s3:ExistingObjectTag", call.existing_tags)
        if p.get("VersionId"):
            context["s3:versionid"] = p["VersionId"]
        action = _versioned(p, plain, versioned)
        needs = [Need(action, _object_arn(p["Bucket"], p["Key"]), context)]
        if not_found_needs_list and call.facts.get("notFound"):
            # S3 answers 404 for a missing key only to a caller that may list the
            # bucket; to anyone else 403, and the code's "gone" path never runs.
            needs.append(Need("s3:ListBucket", _bucket_arn(p["Bucket"])))
        return needs

    return rule


def _bucket_call(action: str) -> Rule:
    def rule(call: AwsCall, where: Where) -> list[Need]:
        context = {"s3:prefix": call.params["Prefix"]} if "Prefix" in call.params else {}
        return [Need(action, _bucket_arn(call.params["Bucket"]), context)]

    return rule


def _put_object_tagging(call: AwsCall, where: Where) -> list[Need]:
    [need] = _object_call("s3:PutObjectTagging", "s3:PutObjectVersionTagging")(call, where)
    tags = {t["Key"]: t["Value"] for t in call.params["Tagging"]["TagSet"]}
    need.context.update(_request_tags(tags))
    return [need]


def _put_object(call: AwsCall, where: Where) -> list[Need]:
    p = call.params
    target = _object_arn(p["Bucket"], p["Key"])
    tags = _url_tags(p.get("Tagging"))
    if not tags:
        return [Need("s3:PutObject", target)]
    # Tags given with the upload are also authorized as s3:PutObjectTagging.
    return [
        Need("s3:PutObject", target, _request_tags(tags)),
        Need("s3:PutObjectTagging", target, _request_tags(tags)),
    ]


def _copy_source(source: Any) -> tuple[str, str, str | None, str]:
    """(bucket, key, version, the x-amz-copy-source header as S3 sees it)."""
    if isinstance(source, dict):
        bucket, key, version = source["Bucket"], source["Key"], source.get("VersionId")
        header = f"{bucket}/{key}" + (f"?versionId={version}" if version else "")
        return bucket, key, version, header
    path, _, version = str(source).partition("?versionId=")
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    return bucket, key, version or None, str(source)


def _copy_object(call: AwsCall, where: Where) -> list[Need]:
    """A read of the source version and a write of the destination."""
    p = call.params
    bucket, key, version, header = _copy_source(p["CopySource"])
    source_tags = call.facts.get("copySourceTags")
    source = _object_arn(bucket, key)
    source_context = _tags_context("s3:ExistingObjectTag", source_tags)
    needs = [
        Need("s3:GetObjectVersion" if version else "s3:GetObject", source, source_context),
    ]
    target = _object_arn(p["Bucket"], p["Key"])
    write_context: dict[str, Any] = {"s3:x-amz-copy-source": header}
    if p.get("TaggingDirective", "COPY") == "REPLACE":
        tags = _url_tags(p.get("Tagging"))
        if tags:
            write_context.update(_request_tags(tags))
            needs.append(Need("s3:PutObjectTagging", target, dict(write_context)))
    else:
        # COPY (the default) reads the source's tags and writes them to the copy.
        read_tags = "s3:GetObjectVersionTagging" if version else "s3:GetObjectTagging"
        needs.append(Need(read_tags, source, source_context))
        needs.append(Need("s3:PutObjectTagging", target, dict(write_context)))
    needs.append(Need("s3:PutObject", target, write_context))
    return needs


def _multipart_write(call: AwsCall, where: Where) -> list[Need]:
    return [Need("s3:PutObject", _object_arn(call.params["Bucket"], call.params["Key"]))]


def _abort_multipart(call: AwsCall, where: Where) -> list[Need]:
    target = _object_arn(call.params["Bucket"], call.params["Key"])
    return [Need("s3:AbortMultipartUpload", target)]


# -- the other services ------------------------------------------------------------------------


def _queue(param: str = "QueueUrl") -> Callable[[str], Rule]:
    def with_action(action: str) -> Rule:
        def rule(call: AwsCall, where: Where) -> list[Need]:
            url = call.params[param]
            return [Need(action, where.queue_arns.get(url, f"<unknown queue {url}>"))]

        return rule

    return with_action


def _get_queue_url(call: AwsCall, where: Where) -> list[Need]:
    name = call.params["QueueName"]
    return [Need("sqs:GetQueueUrl", f"arn:aws:sqs:{where.region}:{where.account}:{name}")]


def _table(action: str) -> Rule:
    def rule(call: AwsCall, where: Where) -> list[Need]:
        p = call.params
        arn = f"arn:aws:dynamodb:{where.region}:{where.account}:table/{p['TableName']}"
        if p.get("IndexName"):
            arn += f"/index/{p['IndexName']}"
        context = {}
        leading = _leading_key(p)
        if leading is not None:
            context["dynamodb:LeadingKeys"] = [leading]
        return [Need(action, arn, context)]

    return rule


def _leading_key(params: dict[str, Any]) -> str | None:
    """The table's partition key value a request names (dynamodb:LeadingKeys)."""
    key = params.get("Key") or params.get("Item")
    if key and PARTITION_KEY in key:
        return _scalar(key[PARTITION_KEY])
    expression = params.get("KeyConditionExpression")
    if not expression or params.get("IndexName"):
        return None
    names = params.get("ExpressionAttributeNames") or {}
    for name, placeholder in re.findall(r"(#?\w+)\s*=\s*(:\w+)", expression):
        if names.get(name, name) == PARTITION_KEY:
            return _scalar(params["ExpressionAttributeValues"][placeholder])
    return None


def _scalar(value: Any) -> str:
    """A low-level attribute value ({"S": "..."}) or a plain one, as a string."""
    return str(next(iter(value.values()))) if isinstance(value, dict) else str(value)


def _machine(action: str, param: str) -> Rule:
    def rule(call: AwsCall, where: Where) -> list[Need]:
        return [Need(action, call.params[param])]

    return rule


def _invoke(call: AwsCall, where: Where) -> list[Need]:
    name = call.params["FunctionName"]
    if name.startswith("arn:"):
        arn = name
    else:
        arn = where.function_arns.get(
            name, f"arn:aws:lambda:{where.region}:{where.account}:function:{name}"
        )
    if call.params.get("Qualifier"):
        # A version or alias is its own resource: ...:function:name:qualifier.
        arn = f"{arn}:{call.params['Qualifier']}"
    return [Need("lambda:InvokeFunction", arn)]


def _put_events(call: AwsCall, where: Where) -> list[Need]:
    needs = []
    for entry in call.params["Entries"]:
        bus = entry.get("EventBusName") or "default"
        arn = (
            bus
            if bus.startswith("arn:")
            else (f"arn:aws:events:{where.region}:{where.account}:event-bus/{bus}")
        )
        needs.append(
            Need(
                "events:PutEvents",
                arn,
                {
                    "events:source": entry.get("Source"),
                    "events:detail-type": entry.get("DetailType"),
                },
            )
        )
    return needs


def _secret(call: AwsCall, where: Where) -> list[Need]:
    return [Need("secretsmanager:GetSecretValue", call.params["SecretId"])]


def _metric_data(call: AwsCall, where: Where) -> list[Need]:
    return [
        Need("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": call.params["Namespace"]})
    ]


_sqs = _queue()


def _log_group(action: str) -> Rule:
    def rule(call: AwsCall, where: Where) -> list[Need]:
        name = call.params["logGroupName"]
        return [Need(action, f"arn:aws:logs:{where.region}:{where.account}:log-group:{name}")]

    return rule


OPERATIONS: dict[tuple[str, str], Rule] = {
    # The Express machine's log, read by the reconciliation.
    ("logs", "FilterLogEvents"): _log_group("logs:FilterLogEvents"),
    ("s3", "GetObject"): _object_call("s3:GetObject", "s3:GetObjectVersion", True),
    ("s3", "HeadObject"): _object_call("s3:GetObject", "s3:GetObjectVersion", True),
    ("s3", "GetObjectTagging"): _object_call("s3:GetObjectTagging", "s3:GetObjectVersionTagging"),
    ("s3", "PutObjectTagging"): _put_object_tagging,
    ("s3", "DeleteObjectTagging"): _object_call(
        "s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"
    ),
    ("s3", "DeleteObject"): _object_call("s3:DeleteObject", "s3:DeleteObjectVersion"),
    ("s3", "GetObjectRetention"): _object_call("s3:GetObjectRetention", "s3:GetObjectRetention"),
    ("s3", "GetObjectLegalHold"): _object_call("s3:GetObjectLegalHold", "s3:GetObjectLegalHold"),
    ("s3", "PutObject"): _put_object,
    ("s3", "CopyObject"): _copy_object,
    ("s3", "CreateMultipartUpload"): _multipart_write,
    ("s3", "UploadPart"): _multipart_write,
    ("s3", "CompleteMultipartUpload"): _multipart_write,
    ("s3", "AbortMultipartUpload"): _abort_multipart,
    ("s3", "ListObjectsV2"): _bucket_call("s3:ListBucket"),
    ("s3", "ListObjects"): _bucket_call("s3:ListBucket"),
    ("s3", "HeadBucket"): _bucket_call("s3:ListBucket"),
    ("s3", "ListObjectVersions"): _bucket_call("s3:ListBucketVersions"),
    ("s3", "GetBucketVersioning"): _bucket_call("s3:GetBucketVersioning"),
    ("s3", "GetBucketPolicy"): _bucket_call("s3:GetBucketPolicy"),
    ("s3", "GetObjectLockConfiguration"): _bucket_call("s3:GetBucketObjectLockConfiguration"),
    ("sqs", "SendMessage"): _sqs("sqs:SendMessage"),
    ("sqs", "SendMessageBatch"): _sqs("sqs:SendMessage"),
    ("sqs", "ReceiveMessage"): _sqs("sqs:ReceiveMessage"),
    ("sqs", "DeleteMessage"): _sqs("sqs:DeleteMessage"),
    ("sqs", "DeleteMessageBatch"): _sqs("sqs:DeleteMessage"),
    ("sqs", "ChangeMessageVisibility"): _sqs("sqs:ChangeMessageVisibility"),
    ("sqs", "ChangeMessageVisibilityBatch"): _sqs("sqs:ChangeMessageVisibility"),
    ("sqs", "GetQueueAttributes"): _sqs("sqs:GetQueueAttributes"),
    ("sqs", "GetQueueUrl"): _get_queue_url,
    ("dynamodb", "PutItem"): _table("dynamodb:PutItem"),
    ("dynamodb", "GetItem"): _table("dynamodb:GetItem"),
    ("dynamodb", "UpdateItem"): _table("dynamodb:UpdateItem"),
    ("dynamodb", "DeleteItem"): _table("dynamodb:DeleteItem"),
    ("dynamodb", "Query"): _table("dynamodb:Query"),
    ("stepfunctions", "StartExecution"): _machine("states:StartExecution", "stateMachineArn"),
    ("stepfunctions", "StartSyncExecution"): _machine(
        "states:StartSyncExecution", "stateMachineArn"
    ),
    ("stepfunctions", "ListExecutions"): _machine("states:ListExecutions", "stateMachineArn"),
    ("stepfunctions", "DescribeExecution"): _machine("states:DescribeExecution", "executionArn"),
    ("stepfunctions", "GetExecutionHistory"): _machine(
        "states:GetExecutionHistory", "executionArn"
    ),
    ("stepfunctions", "StopExecution"): _machine("states:StopExecution", "executionArn"),
    ("stepfunctions", "RedriveExecution"): _machine("states:RedriveExecution", "executionArn"),
    ("lambda", "Invoke"): _invoke,
    ("events", "PutEvents"): _put_events,
    ("secretsmanager", "GetSecretValue"): _secret,
    ("cloudwatch", "PutMetricData"): _metric_data,
}


def needs(call: AwsCall, where: Where) -> list[Need]:
    rule = OPERATIONS.get((call.service, call.operation))
    if rule is None:
        raise UnknownOperation(
            f"{call.principal} called {call.service}:{call.operation}, which "
            f"tests/iamcheck/operations.py does not describe: add what IAM checks for it"
        )
    found = rule(call, where)
    for need in found:
        # A request carries only the condition keys its action supports (S3 has no
        # s3:ExistingObjectTag for a DeleteObject, say): the rest are dropped, as AWS
        # would never set them.
        supported = condition_keys(need.action)
        need.context = {
            k: v
            for k, v in need.context.items()
            if k.startswith("aws:") or _generic(k) in supported
        }
    return found


def reference() -> dict[str, dict[str, Any]]:
    """The Service Authorization Reference, as parliament packages it, by service prefix."""
    return _reference()


@functools.cache
def _reference() -> dict[str, dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # parliament imports the deprecated pkg_resources
        from parliament import iam_definition
    return {service["prefix"]: service for service in iam_definition}


@functools.cache
def condition_keys(action: str) -> frozenset[str]:
    """The condition keys ``action`` supports (lower case, ``<key>`` for tag keys)."""
    prefix, name = action.split(":")
    service = _reference()[prefix]
    [privilege] = [p for p in service["privileges"] if p["privilege"] == name]
    types = {t["resource_type"].rstrip("*") for t in privilege["resource_types"]}
    keys = {k for t in privilege["resource_types"] for k in t["condition_keys"]}
    keys |= {k for r in service["resources"] if r["resource"] in types for k in r["condition_keys"]}
    return frozenset(_generic(k) for k in keys)


def _generic(key: str) -> str:
    """``s3:ExistingObjectTag/scan-status`` -> ``s3:existingobjecttag/<key>``."""
    return re.sub(r"/.+$", "/<key>", key).lower()
