"""The scanner stack: ingest, workflow, definitions and audit, wired together."""

from __future__ import annotations

from typing import Any

from aws_cdk import Aws, CfnOutput, Fn, Stack
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.config import DeployConfig
from stacks.constructs.access_gate import AccessGate
from stacks.constructs.alarms import Alarms
from stacks.constructs.audit import Audit
from stacks.constructs.dashboard import Dashboard
from stacks.constructs.definitions import Definitions
from stacks.constructs.failure_recording import FailureRecording
from stacks.constructs.ingest import Ingest
from stacks.constructs.rescan import Rescan
from stacks.constructs.result_events import ResultEvents
from stacks.constructs.workflow import Workflow
from stacks.nag import acknowledge_findings


class ScannerStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: DeployConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        common_env = {
            "ENVIRONMENT": config.environment,
            "ACCOUNT_ID": Aws.ACCOUNT_ID,
            "REGION": Aws.REGION,
        }
        self.source = source = s3.Bucket.from_bucket_arn(
            self, "SourceBucket", config.source_bucket_arn
        )
        self.quarantine = quarantine = (
            s3.Bucket.from_bucket_arn(self, "QuarantineBucket", config.quarantine_bucket_arn)
            if config.quarantine_bucket_arn
            else None
        )

        self.audit = Audit(self, "Audit")
        self.definitions = Definitions(
            self, "Definitions", config=config, table=self.audit.table, common_env=common_env
        )
        self.workflow = Workflow(
            self,
            "Workflow",
            config=config,
            source=source,
            quarantine=quarantine,
            table=self.audit.table,
            definitions=self.definitions,
            common_env=common_env,
        )
        self.failures = FailureRecording(
            self,
            "FailureRecording",
            state_machine=self.workflow.state_machine,
            source=source,
            table=self.audit.table,
            notify_webhook=self.workflow.notify_webhook,
            common_env=common_env,
        )
        self.result_events = ResultEvents(
            self,
            "ResultEvents",
            publishers=[self.workflow.record_audit, self.failures.recorder],
            bus_arn=config.event_bus_arn,
        )
        express = None
        if config.workflow_type == "EXPRESS":
            express = self.workflow.add_express(
                self.failures.recorder,
                self.failures.dead_letter_queue,
                execution_data=config.express_log_execution_data,
            )
            self.failures.may_rerun_on(self.workflow.state_machine)
            self.failures.reads_express_log(self.workflow.express_log_group)
        self.ingest = Ingest(
            self,
            "Ingest",
            source=source,
            state_machine=self.workflow.state_machine,
            express_state_machine=express,
            express_max_object_mb=config.express_max_object_mb,
            common_env=common_env,
            max_concurrency=config.scan_queue_max_concurrency,
        )

        self.rescan = Rescan(
            self,
            "Rescan",
            source=source,
            queue=self.ingest.queue,
            audit_table=self.audit.table,
            inventory_bucket_arn=config.inventory_bucket_arn,
            common_env=common_env,
        )
        if config.retroscan_after_update_hours:
            self.definitions.retroscan(
                hours=config.retroscan_after_update_hours,
                queue=self.ingest.queue,
                table=self.audit.table,
                source_bucket=source.bucket_name,
            )

        # The roles the access gate exempts: they read unscanned objects, and
        # they alone write scan-* tags (the recorder marks failed scans).
        reader_roles = [fn.role for fn in [*self.workflow.object_readers, self.failures.recorder]]
        tagging_roles = [fn.role for fn in [*self.workflow.object_taggers, self.failures.recorder]]
        if config.protect_source_bucket:
            AccessGate(
                self,
                "AccessGate",
                bucket=source,
                reader_roles=reader_roles,
                tagging_roles=tagging_roles,
                unscanned_readers=config.unscanned_readers,
            )

        Alarms(
            self,
            "Alarms",
            dead_letter_queue=self.ingest.dead_letter_queue,
            failure_dead_letter_queue=self.failures.dead_letter_queue,
            state_machine=self.workflow.state_machine,
            updater=self.definitions.updater,
            topic_arn=config.alarm_topic_arn,
            express_state_machine=express,
            express_log_group=self.workflow.express_log_group if express else None,
        )

        dashboard = Dashboard(
            self,
            "Dashboard",
            machines=[self.workflow.state_machine, *([express] if express else [])],
            queue=self.ingest.queue,
            dead_letter_queues={
                "scan DLQ": self.ingest.dead_letter_queue,
                "failure recorder DLQ": self.failures.dead_letter_queue,
            },
            scanner=self.workflow.scan_object,
            functions=[self.ingest.starter, *self.workflow.functions],
        )

        outputs = {
            "DashboardName": dashboard.name,
            "ResultEventBusArn": self.result_events.bus_arn,
            "SourceBucketName": source.bucket_name,
            "StateMachineArn": self.workflow.state_machine.state_machine_arn,
            "ExpressStateMachineArn": (
                express.state_machine_arn if express is not None else "none"
            ),
            "AuditTableName": self.audit.table.table_name,
            "ScanQueueUrl": self.ingest.queue.queue_url,
            "DeadLetterQueueUrl": self.ingest.dead_letter_queue.queue_url,
            # For `scanctl replay-failures`.
            "FailureDeadLetterQueueUrl": self.failures.dead_letter_queue.queue_url,
            "FailureRecorderFunctionName": self.failures.recorder.function_name,
            # For `scanctl release`, which sends its notice through it.
            "NotifyWebhookFunctionName": (
                self.workflow.notify_webhook.function_name if config.webhook_url else "none"
            ),
            "DefinitionsBucketName": self.definitions.bucket.bucket_name,
            "RescanStateMachineArn": self.rescan.state_machine.state_machine_arn,
            # For `scanctl policy`, which builds the gate's statements from them.
            "AccessGateReaderRoleArns": Fn.join(",", [r.role_arn for r in reader_roles]),
            "AccessGateTaggingRoleArns": Fn.join(",", [r.role_arn for r in tagging_roles]),
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)

        acknowledge_findings(self)
