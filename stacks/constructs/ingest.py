"""Ingest: S3 notifications into a queue (with DLQ), and the starter."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.constants import (
    DLQ_RETENTION_DAYS,
    MAX_RECEIVE_COUNT,
    QUEUE_VISIBILITY_FACTOR,
    STARTER_MEMORY_MB,
    STARTER_TIMEOUT_S,
)
from stacks.constructs.functions import step_function


class Ingest(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        source: s3.IBucket,
        state_machine: sfn.IStateMachine,
        common_env: dict[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            retention_period=Duration.days(DLQ_RETENTION_DAYS),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.queue = sqs.Queue(
            self,
            "ScanQueue",
            visibility_timeout=Duration.seconds(STARTER_TIMEOUT_S * QUEUE_VISIBILITY_FACTOR),
            retention_period=Duration.days(DLQ_RETENTION_DAYS),
            # SQS-managed keys: S3 can deliver to the queue without a key policy.
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT
            ),
        )
        # On an imported bucket CDK's notification handler adds this rule next to
        # the bucket's existing ones instead of replacing them.
        source.add_event_notification(s3.EventType.OBJECT_CREATED, s3n.SqsDestination(self.queue))

        self.starter = step_function(
            self,
            "StartScan",
            name="start_scan",
            target="steps",
            environment={**common_env, "STATE_MACHINE_ARN": state_machine.state_machine_arn},
            memory_mb=STARTER_MEMORY_MB,
            timeout=Duration.seconds(STARTER_TIMEOUT_S),
        )
        self.starter.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=10,
                max_batching_window=Duration.seconds(1),
                report_batch_item_failures=True,
            )
        )
        state_machine.grant_start_execution(self.starter)
