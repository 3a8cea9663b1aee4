"""Ingest: S3 notifications into a queue (with DLQ), and the starter."""

from __future__ import annotations

import jsii
from aws_cdk import Aws, Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.config import STARTER_BATCH_SIZE
from stacks.constants import (
    DLQ_RETENTION_DAYS,
    MAX_RECEIVE_COUNT,
    QUEUE_VISIBILITY_FACTOR,
    STARTER_MEMORY_MB,
    STARTER_TIMEOUT_S,
)
from stacks.constructs.functions import step_function


@jsii.implements(s3.IBucketNotificationDestination)
class _QueueForThisAccount:
    """The scan queue as a notification destination, for this account's S3 only.

    CDK's ``SqsDestination`` pins only ``aws:SourceArn``, and a bucket ARN
    carries no account: a bucket of the same name in another account (after
    this one is deleted, say) could then fill the queue. ``aws:SourceAccount``
    closes that.
    """

    def __init__(self, queue: sqs.IQueue) -> None:
        self.queue = queue
        self._granted = False

    def bind(self, _scope: Construct, bucket: s3.IBucket) -> s3.BucketNotificationDestinationConfig:
        if not self._granted:  # one statement, however many event types
            self._grant(bucket)
        return s3.BucketNotificationDestinationConfig(
            arn=self.queue.queue_arn,
            type=s3.BucketNotificationDestinationType.QUEUE,
            dependencies=[self.queue],
        )

    def _grant(self, bucket: s3.IBucket) -> None:
        self._granted = True
        self.queue.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("s3.amazonaws.com")],
                actions=["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                resources=[self.queue.queue_arn],
                conditions={
                    "ArnLike": {"aws:SourceArn": bucket.bucket_arn},
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                },
            )
        )


class Ingest(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        source: s3.IBucket,
        state_machine: sfn.IStateMachine,
        common_env: dict[str, str],
        max_concurrency: int,
        express_state_machine: sfn.IStateMachine | None = None,
        express_max_object_mb: int = 256,
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
        # On an imported bucket CDK's notification handler adds these rules next
        # to the bucket's existing ones instead of replacing them. A completed
        # restore makes an archived object readable: it is scanned then.
        destination = _QueueForThisAccount(self.queue)
        source.add_event_notification(s3.EventType.OBJECT_CREATED, destination)
        source.add_event_notification(s3.EventType.OBJECT_RESTORE_COMPLETED, destination)

        self.starter = step_function(
            self,
            "StartScan",
            name="start_scan",
            target="steps",
            environment={
                **common_env,
                "STATE_MACHINE_ARN": state_machine.state_machine_arn,
                "SOURCE_BUCKET_NAME": source.bucket_name,
                **(
                    {
                        # Small objects to Express, the rest to Standard.
                        "EXPRESS_STATE_MACHINE_ARN": express_state_machine.state_machine_arn,
                        "EXPRESS_MAX_OBJECT_MB": str(express_max_object_mb),
                    }
                    if express_state_machine is not None
                    else {}
                ),
            },
            memory_mb=STARTER_MEMORY_MB,
            timeout=Duration.seconds(STARTER_TIMEOUT_S),
        )
        self.starter.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=STARTER_BATCH_SIZE,
                max_batching_window=Duration.seconds(1),
                report_batch_item_failures=True,
                # A burst waits in the queue instead of starting everything at once.
                max_concurrency=max_concurrency,
            )
        )
        state_machine.grant_start_execution(self.starter)
        if express_state_machine is not None:
            express_state_machine.grant_start_execution(self.starter)
