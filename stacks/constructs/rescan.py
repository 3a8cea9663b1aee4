"""Rescan: existing objects scanned by Step Functions itself, visible and redrivable.

A Standard state machine whose Distributed Map lists the source bucket (or
reads an S3 Inventory manifest) and hands batches to a small function that
picks the objects the run's mode asks for and sends them to the scan queue as
S3's own records: the one ingest path scans them, with its concurrency limits
and de-duplication. ``scanctl rescan`` starts it.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

import statemachines
from stacks.constants import STEP_MEMORY_MB
from stacks.constructs.functions import LOG_RETENTION, step_function

BATCH_TIMEOUT_S = 300  # 200 objects, a tag read each, at worst


class Rescan(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        source: s3.IBucket,
        queue: sqs.IQueue,
        audit_table: dynamodb.ITable,
        inventory_bucket_arn: str | None,
        common_env: dict[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.batch = step_function(
            self,
            "RescanBatch",
            name="rescan_batch",
            target="steps",
            environment={
                **common_env,
                "SCAN_QUEUE_URL": queue.queue_url,
                "SOURCE_BUCKET_NAME": source.bucket_name,
                "DDB_TABLE_NAME": audit_table.table_name,
            },
            memory_mb=STEP_MEMORY_MB,
            timeout=Duration.seconds(BATCH_TIMEOUT_S),
        )
        # Tags say whether (and with what) an object was scanned, and name its
        # current version; nothing else of the object is read.
        self.batch.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObjectTagging", "s3:GetObjectVersionTagging"],
                resources=[source.arn_for_objects("*")],
            )
        )
        # The bucket policy: only with the access gate in it are the tags ours.
        self.batch.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:GetBucketPolicy"], resources=[source.bucket_arn])
        )
        # The audit table, by object: a tag counts only if one of our scans wrote it.
        self.batch.add_to_role_policy(
            iam.PolicyStatement(actions=["dynamodb:Query"], resources=[audit_table.table_arn])
        )
        queue.grant_send_messages(self.batch)

        stack = Stack.of(self)
        self.name = f"{stack.stack_name}-rescan"
        machine_arn = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=self.name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
        # The listing (ItemReader) and the batches; nothing else of the bucket.
        role.add_to_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[source.bucket_arn])
        )
        if inventory_bucket_arn:
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:GetObject"], resources=[f"{inventory_bucket_arn}/*"]
                )
            )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"], resources=[self.batch.function_arn]
            )
        )
        # A Distributed Map runs its batches as child executions of this machine.
        role.add_to_policy(
            iam.PolicyStatement(actions=["states:StartExecution"], resources=[machine_arn])
        )
        # Child executions are named <machine>/<map run>:<child>.
        self.child_executions_arn = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{self.name}/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["states:DescribeExecution", "states:StopExecution"],
                resources=[self.child_executions_arn],
            )
        )
        log_group = logs.LogGroup(
            self, "Logs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=self.name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(statemachines.rescan_text()),
            definition_substitutions=statemachines.rescan_substitutions(
                source.bucket_name, self.batch.function_arn
            ),
            role=role,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ERROR),
            tracing_enabled=True,
            comment="Rescan existing objects through the scan queue",
        )
