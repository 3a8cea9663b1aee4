"""Definitions: the cache bucket, and the updater that fills it on a schedule and
once during each deploy that changes it."""

from __future__ import annotations

from aws_cdk import Annotations, Duration, RemovalPolicy, triggers
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from functions.record_audit.schema import BY_VERDICT_INDEX, CDN_LEASE_PARTITION
from stacks.config import DeployConfig
from stacks.constants import (
    DEFINITIONS_PREFIX,
    FRESHCLAM_STATE_KEY,
    UPDATER_EPHEMERAL_MB,
    UPDATER_MEMORY_MB,
    UPDATER_TIMEOUT_MINUTES,
)
from stacks.constructs.functions import step_function


class Definitions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        table: dynamodb.ITable,
        common_env: dict,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Cache",
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                # Old tarballs are only useful for a quick rollback.
                s3.LifecycleRule(noncurrent_version_expiration=Duration.days(7)),
                s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.prefix = DEFINITIONS_PREFIX
        self.objects_arn = self.bucket.arn_for_objects(f"{DEFINITIONS_PREFIX}/*")
        self.state_arn = self.bucket.arn_for_objects(FRESHCLAM_STATE_KEY)
        self.table = table

        env = {
            **common_env,
            "DEFINITIONS_BUCKET_NAME": self.bucket.bucket_name,
            "DEFINITIONS_PREFIX": DEFINITIONS_PREFIX,
            "FRESHCLAM_STATE_KEY": FRESHCLAM_STATE_KEY,
            # The CDN lease lives in the audit table.
            "DDB_TABLE_NAME": table.table_name,
            "CLAMAV_DATABASE_MIRROR": config.database_mirror,
        }
        if config.private_mirror:
            env["CLAMAV_PRIVATE_MIRROR"] = config.private_mirror
        self.updater = step_function(
            self,
            "Updater",
            name="update_definitions",
            target="scanner",
            environment=env,
            memory_mb=UPDATER_MEMORY_MB,
            timeout=Duration.minutes(UPDATER_TIMEOUT_MINUTES),
            ephemeral_mb=UPDATER_EPHEMERAL_MB,
        )
        self.grant_read(self.updater)
        self.updater.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:PutObject"], resources=[self.objects_arn])
        )
        # Its freshclam.dat, restored before each run and saved after every run.
        self.updater.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject"], resources=[self.state_arn]
            )
        )
        self.grant_lease(self.updater)
        self.schedule = events.Rule(
            self,
            "Schedule",
            schedule=events.Schedule.expression(config.update_schedule),
            description="Refresh the ClamAV definitions cache",
            targets=[targets.LambdaFunction(self.updater, retry_attempts=2)],
        )
        # The deploy fills the cache: without it, nothing would until the first
        # scheduled run, and every cold scanner would fall back to freshclam.
        # Asynchronous (Event): the deploy does not wait for ClamAV's CDN, and a
        # refusal (a 429 on deploy day) never rolls the stack back; a failed run
        # shows on the updater's alarms, and Lambda retries it twice. It runs
        # again whenever a deploy changes the updater (a new ClamAV, say).
        self.fill_on_deploy = triggers.Trigger(
            self,
            "FillOnDeploy",
            handler=self.updater,
            invocation_type=triggers.InvocationType.EVENT,
            execute_on_handler_change=True,
        )
        Annotations.of(self.updater).acknowledge_warning(
            "@aws-cdk/aws-lambda:addPermissionsToVersionOrAlias",
            "The trigger invokes the updater's version with its role's IAM permission "
            "(lambda:InvokeFunction on the function's ARN and its versions); the schedule's "
            "resource-based permission is for the unqualified function it invokes.",
        )

    def retroscan(
        self, *, hours: int, queue: sqs.IQueue, table: dynamodb.ITable, source_bucket: str
    ) -> None:
        """After each publish, the updater sends back to the queue what it found clean
        in the previous ``hours`` with older definitions."""
        for name, value in {
            "RETROSCAN_AFTER_UPDATE_HOURS": str(hours),
            "SCAN_QUEUE_URL": queue.queue_url,
            "SOURCE_BUCKET_NAME": source_bucket,
        }.items():
            self.updater.add_environment(name, value)
        self.updater.add_to_role_policy(
            iam.PolicyStatement(
                actions=["dynamodb:Query"],
                resources=[f"{table.table_arn}/index/{BY_VERDICT_INDEX}"],
            )
        )
        queue.grant_send_messages(self.updater)

    def grant_lease(self, grantee: iam.IGrantable) -> None:
        """The CDN lease: conditional UpdateItems on its one item of the audit table,
        and no other item (dynamodb:LeadingKeys). A refused write returns the item
        (ReturnValuesOnConditionCheckFailure), so no read is granted."""
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["dynamodb:UpdateItem"],
                resources=[self.table.table_arn],
                conditions={
                    "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [CDN_LEASE_PARTITION]}
                },
            )
        )

    def grant_read(self, grantee: iam.IGrantable) -> None:
        # GetObjectVersion: readers fetch the tarball version the manifest names.
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:GetObjectVersion"], resources=[self.objects_arn]
            )
        )
        # ListBucket turns a missing manifest into 404 (no cache yet) instead of
        # 403. No s3:prefix condition: a GetObject carries no prefix, so a
        # conditioned grant would not count. The bucket is the scanner's own.
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn])
        )
