"""cdk-nag (AwsSolutions) acknowledgements.

Each names one finding, on the construct that has it, with the reason a
reviewer needs. Anything not listed here fails the synth.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_lambda as lambda_
from constructs import IConstruct

if TYPE_CHECKING:
    from stacks.scanner_stack import ScannerStack

BASIC_EXECUTION_ROLE = (
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AWSLambdaBasicExecutionRole]"
)


def _ack(construct: IConstruct, finding: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=finding, reason=reason))


def _resource(stack: Stack, arn: str) -> str:
    """``AwsSolutions-IAM5[Resource::...]`` for ``arn``, spelled as cdk-nag spells it.

    cdk-nag flattens the resolved value (``flattenCfnReference``): a ``Ref`` is
    ``<Name>``, a ``GetAtt`` ``<Name.Attr>``, a ``Join`` its parts joined. What
    resolves to a literal depends on the synthesis (an explicit region, the
    CLI's default region, ``cdk.json``'s partition literals), so the
    acknowledgement is derived from the same token the grant uses, never
    written out by hand.
    """
    return f"AwsSolutions-IAM5[Resource::{flatten_reference(stack.resolve(arn))}]"


def flatten_reference(node: Any) -> str:
    """A resolved CloudFormation value as one string, the way cdk-nag writes it."""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict) and "Fn::Join" in node:
        delimiter, items = node["Fn::Join"]
        return delimiter.join(flatten_reference(item) for item in items)
    if isinstance(node, dict) and "Fn::GetAtt" in node:
        resource, attribute = node["Fn::GetAtt"]
        return f"<{flatten_reference(resource)}.{flatten_reference(attribute)}>"
    if isinstance(node, dict) and "Ref" in node:
        return f"<{flatten_reference(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"))


def _function(fn: lambda_.Function) -> None:
    _ack(
        fn,
        BASIC_EXECUTION_ROLE,
        "AWSLambdaBasicExecutionRole grants only logs:CreateLogGroup, CreateLogStream and "
        "PutLogEvents, which every Lambda function needs to write its logs.",
    )
    _ack(
        fn,
        "AwsSolutions-IAM5[Resource::*]",
        "Active X-Ray tracing needs xray:PutTraceSegments and xray:PutTelemetryRecords, "
        "which do not support resource-level permissions.",
    )


def acknowledge_findings(stack: ScannerStack) -> None:
    workflow, definitions, ingest = stack.workflow, stack.definitions, stack.ingest
    failures, rescan = stack.failures, stack.rescan
    for fn in [
        *workflow.functions,
        definitions.updater,
        ingest.starter,
        failures.recorder,
        rescan.batch,
    ]:
        _function(fn)

    cache_objects = _resource(stack, definitions.objects_arn)
    for fn in (workflow.fetch_definitions, workflow.scan_object, definitions.updater):
        _ack(
            fn,
            cache_objects,
            "Only the definitions prefix of the scanner's own cache bucket; the tarball and "
            "manifest keys live under it.",
        )

    config = stack.config
    source_objects = _resource(stack, stack.source.arn_for_objects("*"))
    _ack(
        workflow.scan_object,
        source_objects,
        "The scanner must read any object (and object version) that lands in the source "
        "bucket; keys are not known in advance. Read-only: GetObject, GetObjectVersion.",
    )
    _ack(
        workflow.apply_verdict,
        source_objects,
        "apply_verdict tags, copies and deletes whichever object version was scanned; keys are "
        "not known in advance. No other bucket-level or write actions are granted.",
    )
    if config.quarantine_bucket_arn:
        _ack(
            workflow.apply_verdict,
            _resource(stack, stack.quarantine.arn_for_objects("*")),
            "Quarantined objects keep their original key; only PutObject and PutObjectTagging.",
        )

    _ack(
        failures.recorder,
        source_objects,
        "The failure recorder marks the object of a failed scan (scan-status=error, or infected "
        "when that verdict was reached but not applied): an eTag-checked HEAD and the object's "
        "tags, on whichever key failed. No delete, no copy.",
    )
    _ack(
        failures.recorder,
        _resource(stack, failures.executions_arn),
        "The recorder reads the history of whichever execution of the scan machine failed "
        "(its name is known only when it fails): GetExecutionHistory and DescribeExecution "
        "on that machine's executions only.",
    )
    _ack(
        rescan.batch,
        source_objects,
        "A rescan batch reads the tags of whichever listed objects it is handed (to see whether "
        "and with which definitions they were scanned); keys are not known in advance. Only "
        "GetObjectTagging and GetObjectVersionTagging: no content, no write.",
    )
    _ack(
        rescan.state_machine.role,
        _resource(stack, rescan.child_executions_arn),
        "A Distributed Map runs its batches as child executions of the Rescan machine; the "
        "machine describes and stops those, and only those.",
    )
    _ack(
        rescan.state_machine.role,
        "AwsSolutions-IAM5[Resource::*]",
        "X-Ray tracing and CloudWatch Logs log delivery do not support resource-level permissions.",
    )
    _ack(
        rescan.state_machine,
        "AwsSolutions-SF1",
        "The Rescan machine logs errors only: a run over 100 million objects is 500,000 "
        "batches, whose every event at level ALL would be gigabytes of logs; the Map Run "
        "page shows each batch, and the scans themselves are logged in full by the scan "
        "machine.",
    )
    if config.inventory_bucket_arn:
        _ack(
            rescan.state_machine.role,
            _resource(stack, f"{config.inventory_bucket_arn}/*"),
            "The S3 Inventory manifest and its report files, named at run time, in the "
            "inventory bucket the operator configured; read only.",
        )
    _ack(
        failures.dead_letter_queue,
        "AwsSolutions-SQS3",
        "This queue is itself a dead-letter queue: the failure rule's target DLQ and the "
        "recorder's on-failure destination. An alarm watches its depth.",
    )
    for machine in filter(None, [workflow.state_machine, workflow.express_state_machine]):
        _ack(
            machine,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray tracing and CloudWatch Logs log delivery (logs:CreateLogDelivery and friends) "
            "do not support resource-level permissions. Lambda invokes are listed per function.",
        )
    _ack(
        definitions.bucket,
        "AwsSolutions-S1",
        "The cache holds only public ClamAV signature databases, written by the updater and "
        "read by the scanner roles; CloudTrail data events cover access auditing if needed.",
    )

    for child in stack.node.children:
        if child.node.id.startswith("BucketNotificationsHandler"):
            _ack(
                child,
                BASIC_EXECUTION_ROLE,
                "CDK's own handler that adds the queue notification to the imported source "
                "bucket without removing its existing notification rules; it only writes logs.",
            )
            _ack(
                child,
                "AwsSolutions-IAM5[Resource::*]",
                "CDK's notification handler calls s3:PutBucketNotification, granted by CDK on "
                "'*' for imported buckets; it runs only during deployment.",
            )
