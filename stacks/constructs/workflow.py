"""Workflow: the scan state machine and the functions it runs."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

import statemachines
from functions.record_audit.schema import HOLD_PREFIX
from stacks.config import DeployConfig
from stacks.constants import (
    DEFINITIONS_WAIT_S,
    DEFINITIONS_WAIT_SHARE,
    STEP_MEMORY_MB,
    STEP_TIMEOUT_S,
    WEBHOOK_TIMEOUT_S,
)
from stacks.constructs.definitions import Definitions
from stacks.constructs.functions import LOG_RETENTION, step_function


class Workflow(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        source: s3.IBucket,
        quarantine: s3.IBucket | None,
        table: dynamodb.ITable,
        definitions: Definitions,
        common_env: dict[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        env = {
            **common_env,
            "DDB_TABLE_NAME": table.table_name,
            "DEFINITIONS_BUCKET_NAME": definitions.bucket.bucket_name,
            "DEFINITIONS_PREFIX": definitions.prefix,
            "MAX_OBJECT_SIZE_MB": str(config.max_object_size_mb),
            "MAX_SCAN_SIZE_MB": str(config.max_scan_size_mb),
            "MAX_DEFINITIONS_AGE_HOURS": str(config.max_definitions_age_hours),
            "QUARANTINE_BUCKET_NAME": config.quarantine_bucket_name or "",
        }

        def small(cid: str, name: str, timeout_s: int = STEP_TIMEOUT_S) -> lambda_.Function:
            return step_function(
                self,
                cid,
                name=name,
                target="steps",
                environment=env,
                memory_mb=STEP_MEMORY_MB,
                timeout=Duration.seconds(timeout_s),
            )

        self.fetch_definitions = small("FetchDefinitions", "fetch_definitions")
        self.scan_object = step_function(
            self,
            "ScanObject",
            name="scan_object",
            target="scanner",
            environment={
                **env,
                "CLAMAV_WORK_DIR": "/tmp/clamav",
                # A cold scanner waits this long for the cache the updater is filling.
                "DEFINITIONS_WAIT_SECONDS": str(
                    min(
                        DEFINITIONS_WAIT_S,
                        int(config.scanner_timeout_minutes * 60 * DEFINITIONS_WAIT_SHARE),
                    )
                ),
                # For the freshclam fallback, used only when the cache is unusable.
                "CLAMAV_DATABASE_MIRROR": config.database_mirror,
                **(
                    {"CLAMAV_PRIVATE_MIRROR": config.private_mirror}
                    if config.private_mirror
                    else {}
                ),
            },
            memory_mb=config.scanner_memory_mb,
            timeout=Duration.minutes(config.scanner_timeout_minutes),
            ephemeral_mb=config.scanner_ephemeral_mb,
            reserved_concurrency=config.scanner_reserved_concurrency,
        )
        self.apply_verdict = small("ApplyVerdict", "apply_verdict")
        self.record_audit = small("RecordAudit", "record_audit")
        webhook = bool(config.webhook_url)
        self.notify_webhook = None
        if webhook:
            self.notify_webhook = small("NotifyWebhook", "notify_webhook", WEBHOOK_TIMEOUT_S)
            # The URL is often a credential itself (Slack's, say): only the
            # function that posts to it sees it.
            self.notify_webhook.add_environment("WEBHOOK_URL", config.webhook_url or "")
            if config.webhook_secret_arn:
                # The signing secret stays in Secrets Manager; the function reads it.
                self.notify_webhook.add_environment("WEBHOOK_SECRET_ARN", config.webhook_secret_arn)
                self.notify_webhook.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=["secretsmanager:GetSecretValue"],
                        resources=[config.webhook_secret_arn],
                    )
                )

        self._grant(config, source, quarantine, table, definitions)

        # Keyed like statemachines.FUNCTION_PLACEHOLDERS: the folder under functions/.
        candidates = {
            "fetch_definitions": self.fetch_definitions,
            "scan_object": self.scan_object,
            "apply_verdict": self.apply_verdict,
            "record_audit": self.record_audit,
            "notify_webhook": self.notify_webhook,
        }
        self.by_name: dict[str, lambda_.Function] = {
            name: candidates[name] for name in statemachines.functions(webhook)
        }
        log_group = logs.LogGroup(
            self, "ExecutionLogs", retention=LOG_RETENTION, removal_policy=RemovalPolicy.DESTROY
        )
        self.state_machine = sfn.StateMachine(
            self,
            "ScanObjectStateMachine",
            state_machine_type=sfn.StateMachineType.STANDARD,
            # Inline JSON with DefinitionSubstitutions: the deployed text is the
            # file itself, and cfn-lint can validate it.
            definition_body=sfn.DefinitionBody.from_string(statemachines.variant_text(webhook)),
            definition_substitutions=statemachines.substitutions(
                {name: fn.function_arn for name, fn in self.by_name.items()}, webhook
            ),
            logs=sfn.LogOptions(
                destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            tracing_enabled=True,
            comment="Scan one S3 object version with ClamAV",
        )
        self._may_invoke(self.state_machine, self.by_name.values())
        self.express_state_machine: sfn.StateMachine | None = None
        self._webhook = webhook

    @staticmethod
    def _may_invoke(machine: sfn.StateMachine, functions: Any) -> None:
        for fn in functions:
            machine.role.add_to_principal_policy(
                iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[fn.function_arn])
            )

    def add_express(
        self,
        recorder: lambda_.IFunction,
        failure_queue: sqs.IQueue,
        *,
        execution_data: bool = True,
    ) -> sfn.StateMachine:
        """WORKFLOW_TYPE=EXPRESS: the same definition as an Express machine, beside the
        Standard one (which scans objects too large for Express's 5 minutes).

        Express keeps no history in Step Functions: its console view reads the
        executions from CloudWatch Logs, so every event is logged (with its data
        unless EXPRESS_LOG_EXECUTION_DATA=false), to a log group of its own with a
        retention.
        """
        functions = {**self.by_name, "record_failure": recorder}
        used = statemachines.functions(self._webhook, express=True)
        log_group = self.express_log_group = logs.LogGroup(
            self,
            "ExpressExecutionLogs",
            retention=LOG_RETENTION,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.express_state_machine = sfn.StateMachine(
            self,
            "ScanObjectExpressStateMachine",
            state_machine_type=sfn.StateMachineType.EXPRESS,
            definition_body=sfn.DefinitionBody.from_string(
                statemachines.variant_text(self._webhook, express=True)
            ),
            definition_substitutions=statemachines.substitutions(
                {name: fn.function_arn for name, fn in functions.items()},
                self._webhook,
                express=True,
                failure_queue_url=failure_queue.queue_url,
            ),
            logs=sfn.LogOptions(
                destination=log_group,
                level=sfn.LogLevel.ALL,
                include_execution_data=execution_data,
            ),
            tracing_enabled=True,
            comment="Scan one S3 object version with ClamAV (Express)",
        )
        self._may_invoke(self.express_state_machine, [functions[name] for name in used])
        # Keep The Failure: the state of a failure the recorder could not record.
        failure_queue.grant_send_messages(self.express_state_machine)
        return self.express_state_machine

    def _grant(
        self,
        config: DeployConfig,
        source: s3.IBucket,
        quarantine: s3.IBucket | None,
        table: dynamodb.ITable,
        definitions: Definitions,
    ) -> None:
        objects = source.arn_for_objects("*")
        definitions.grant_read(self.fetch_definitions)
        definitions.grant_read(self.scan_object)
        # The freshclam fallback takes the CDN lease (and records a cool-down).
        definitions.grant_lease(self.scan_object)

        # ListBucket(Versions): a deleted object then answers 404 (skipped), not 403.
        list_source = iam.PolicyStatement(
            actions=["s3:ListBucket", "s3:ListBucketVersions"], resources=[source.bucket_arn]
        )
        self.scan_object.add_to_role_policy(list_source)
        self.scan_object.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:GetObjectVersion"], resources=[objects]
            )
        )
        self.apply_verdict.add_to_role_policy(list_source)
        self.apply_verdict.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "s3:GetObject",  # the copy source for quarantine
                    "s3:GetObjectVersion",
                    "s3:GetObjectTagging",
                    "s3:GetObjectVersionTagging",
                    "s3:PutObjectTagging",
                    "s3:PutObjectVersionTagging",
                    "s3:DeleteObject",
                    "s3:DeleteObjectVersion",
                ],
                resources=[objects],
            )
        )
        if quarantine is not None:
            self.apply_verdict.add_to_role_policy(
                iam.PolicyStatement(
                    # Get*Tagging: a retried quarantine checks that its copy is there.
                    actions=[
                        "s3:PutObject",
                        "s3:PutObjectTagging",
                        "s3:GetObjectTagging",
                        "s3:GetObjectVersionTagging",
                    ],
                    resources=[quarantine.arn_for_objects("*")],
                )
            )
            # ...among every copy of the key (a later upload's may be newer).
            self.apply_verdict.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucketVersions"], resources=[quarantine.bucket_arn]
                )
            )
            # Whether earlier copies survive a later one of the same key: recorded.
            self.apply_verdict.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["s3:GetBucketVersioning"], resources=[quarantine.bucket_arn]
                )
            )
        if config.quarantine_bucket_kms_key_arn:
            self.apply_verdict.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["kms:GenerateDataKey", "kms:Decrypt"],
                    resources=[config.quarantine_bucket_kms_key_arn],
                )
            )
        if config.source_bucket_kms_key_arn:
            decrypt = iam.PolicyStatement(
                actions=["kms:Decrypt"], resources=[config.source_bucket_kms_key_arn]
            )
            self.scan_object.add_to_role_policy(decrypt)
            self.apply_verdict.add_to_role_policy(decrypt)
        self.record_audit.add_to_role_policy(
            iam.PolicyStatement(actions=["dynamodb:PutItem"], resources=[table.table_arn])
        )
        # Infected holds (functions/shared/holds.py): their own partitions only.
        self.apply_verdict.add_to_role_policy(
            iam.PolicyStatement(
                actions=["dynamodb:GetItem", "dynamodb:PutItem"],
                resources=[table.table_arn],
                conditions={
                    "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{HOLD_PREFIX}*"]}
                },
            )
        )

    @property
    def functions(self) -> list[lambda_.Function]:
        return list(self.by_name.values())

    @property
    def object_readers(self) -> list[lambda_.Function]:
        """Functions that read source objects before they are clean (HEAD, GET, copy)."""
        return [self.scan_object, self.apply_verdict]

    @property
    def object_taggers(self) -> list[lambda_.Function]:
        """Functions that write scan-* tags on source objects."""
        return [self.apply_verdict]
