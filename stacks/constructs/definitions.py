"""Definitions: the cache bucket, and the scheduled updater that fills it."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from functions.record_audit.schema import BY_VERDICT_INDEX
from stacks.config import DeployConfig
from stacks.constants import (
    DEFINITIONS_PREFIX,
    UPDATER_EPHEMERAL_MB,
    UPDATER_MEMORY_MB,
    UPDATER_TIMEOUT_MINUTES,
)
from stacks.constructs.functions import step_function


class Definitions(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: DeployConfig, common_env: dict
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

        env = {
            **common_env,
            "DEFINITIONS_BUCKET_NAME": self.bucket.bucket_name,
            "DEFINITIONS_PREFIX": DEFINITIONS_PREFIX,
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
        self.schedule = events.Rule(
            self,
            "Schedule",
            schedule=events.Schedule.expression(config.update_schedule),
            description="Refresh the ClamAV definitions cache",
            targets=[targets.LambdaFunction(self.updater, retry_attempts=2)],
        )

    def retroscan(
        self, *, hours: int, queue: sqs.IQueue, table: dynamodb.ITable, source_bucket: str
    ) -> None:
        """After each publish, the updater sends back to the queue what it found clean
        in the previous ``hours`` with older definitions."""
        for name, value in {
            "RETROSCAN_AFTER_UPDATE_HOURS": str(hours),
            "SCAN_QUEUE_URL": queue.queue_url,
            "DDB_TABLE_NAME": table.table_name,
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
