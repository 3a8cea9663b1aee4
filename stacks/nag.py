"""cdk-nag (AwsSolutions) acknowledgements.

Each names one finding, on the construct that has it, with the reason a
reviewer needs. Anything not listed here fails the synth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, Stack, Token, Validations
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


def _logical_id(stack: Stack, construct: IConstruct) -> str:
    return stack.resolve(stack.get_logical_id(construct.node.default_child))


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


def _region(stack: ScannerStack) -> str:
    """As cdk-nag prints it: the value when the stack has an explicit env."""
    return "<AWS::Region>" if Token.is_unresolved(stack.region) else stack.region


def _account(stack: ScannerStack) -> str:
    return "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account


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

    cache_objects = (
        f"AwsSolutions-IAM5[Resource::<{_logical_id(stack, definitions.bucket)}.Arn>/"
        f"{definitions.prefix}/*]"
    )
    for fn in (workflow.fetch_definitions, workflow.scan_object, definitions.updater):
        _ack(
            fn,
            cache_objects,
            "Only the definitions prefix of the scanner's own cache bucket; the tarball and "
            "manifest keys live under it.",
        )

    config = stack.config
    source_objects = f"AwsSolutions-IAM5[Resource::{config.source_bucket_arn}/*]"
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
            f"AwsSolutions-IAM5[Resource::{config.quarantine_bucket_arn}/*]",
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
        rescan.batch,
        source_objects,
        "A rescan batch reads the tags of whichever listed objects it is handed (to see whether "
        "and with which definitions they were scanned); keys are not known in advance. Only "
        "GetObjectTagging and GetObjectVersionTagging: no content, no write.",
    )
    _ack(
        rescan.state_machine.role,
        f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:{_region(stack)}:"
        f"{_account(stack)}:execution:{stack.stack_name}-rescan/*]",
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
            f"AwsSolutions-IAM5[Resource::{config.inventory_bucket_arn}/*]",
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
