"""FailureRecording: failed executions recorded, marked and announced, outside the workflow.

(And a redrive that fixes one: its success settles the audit item.)

The workflow has no failure path of its own: a Task that fails after its
retries fails the execution right there, so the console's Redrive resumes at
that Task. EventBridge sees the execution end FAILED, TIMED_OUT or ABORTED
and invokes the recorder (``functions/record_failure``). Its invocation is
asynchronous: EventBridge retries delivery, Lambda retries a failed run
twice, and what is still unrecorded lands in this construct's DLQ.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from functions.record_failure.failures import FAILURE_STATUSES, REDRIVEN_SUCCESS, STATUS_CHANGE
from stacks.constants import DLQ_RETENTION_DAYS, STEP_MEMORY_MB, STEP_TIMEOUT_S
from stacks.constructs.functions import step_function

RECONCILE_EVERY_HOURS = 1
RECONCILE_WINDOW_HOURS = 3


class FailureRecording(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        state_machine: sfn.StateMachine,
        source: s3.IBucket,
        table: dynamodb.ITable,
        notify_webhook: lambda_.IFunction | None,
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
        env = {
            **common_env,
            "DDB_TABLE_NAME": table.table_name,
            "STATE_MACHINE_ARN": state_machine.state_machine_arn,
        }
        if notify_webhook is not None:
            env["NOTIFY_WEBHOOK_FUNCTION"] = notify_webhook.function_name
        self.recorder = step_function(
            self,
            "RecordFailure",
            name="record_failure",
            target="steps",
            environment=env,
            memory_mb=STEP_MEMORY_MB,
            # Reads the history, tags, writes one item and maybe waits for the webhook.
            timeout=Duration.seconds(STEP_TIMEOUT_S * 2),
        )
        self.recorder.configure_async_invoke(
            retry_attempts=2,
            max_event_age=Duration.hours(6),
            on_failure=destinations.SqsDestination(self.dead_letter_queue),
        )
        self.rule = events.Rule(
            self,
            "ExecutionFailed",
            description="A scan execution failed, timed out or was aborted (or a redrive "
            "fixed one): record it",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=[STATUS_CHANGE],
                detail={
                    "stateMachineArn": [state_machine.state_machine_arn],
                    "$or": [
                        {"status": list(FAILURE_STATUSES)},
                        # A redrive may resume after Record Audit: its success
                        # settles the item the failure wrote.
                        {"status": [REDRIVEN_SUCCESS], "redriveCount": [{"numeric": [">", 0]}]},
                    ],
                },
            ),
            targets=[
                targets.LambdaFunction(
                    self.recorder,
                    dead_letter_queue=self.dead_letter_queue,
                    retry_attempts=8,
                    max_event_age=Duration.hours(24),
                )
            ],
        )
        # EventBridge delivers status changes on a best-effort basis: every hour,
        # the last three hours' endings are checked against the audit table.
        self.reconciliation = events.Rule(
            self,
            "Reconcile",
            description="Record failed executions whose status change never arrived",
            schedule=events.Schedule.rate(Duration.hours(RECONCILE_EVERY_HOURS)),
            targets=[
                targets.LambdaFunction(
                    self.recorder,
                    event=events.RuleTargetInput.from_object(
                        {"reconcile": {"hours": RECONCILE_WINDOW_HOURS}}
                    ),
                    dead_letter_queue=self.dead_letter_queue,
                    retry_attempts=2,
                )
            ],
        )
        self._grant(state_machine, source, table, notify_webhook)

    def may_rerun_on(self, standard: sfn.StateMachine) -> None:
        """Express: a failure a Standard run could fix is started again there."""
        standard.grant_start_execution(self.recorder)

    def reads_express_log(self, log_group: logs.ILogGroup) -> None:
        """Express: the hourly reconciliation reads the Express machine's failures from
        its log (it keeps no history). FilterLogEvents is authorized on the log
        group's ARN, which CloudFormation gives with a ``:*`` suffix; both forms."""
        self.recorder.add_environment("EXPRESS_LOG_GROUP", log_group.log_group_name)
        bare = Stack.of(self).format_arn(
            service="logs",
            resource="log-group",
            resource_name=log_group.log_group_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.recorder.add_to_role_policy(
            iam.PolicyStatement(
                actions=["logs:FilterLogEvents"], resources=[log_group.log_group_arn, bare]
            )
        )

    def _grant(
        self,
        state_machine: sfn.StateMachine,
        source: s3.IBucket,
        table: dynamodb.ITable,
        notify_webhook: lambda_.IFunction | None,
    ) -> None:
        # Keyword arguments, not Arn.format's dict: jsii drops a dict's snake_case
        # keys, and the grant then named "...:execution", which matches no execution.
        self.executions_arn = Stack.of(self).format_arn(
            service="states",
            resource="execution",
            resource_name=f"{state_machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.recorder.add_to_role_policy(
            iam.PolicyStatement(
                # History: the state it failed in. Describe: whether a redrive has
                # overtaken this notice, and the output EventBridge may leave out.
                actions=["states:GetExecutionHistory", "states:DescribeExecution"],
                resources=[self.executions_arn],
            )
        )
        self.recorder.add_to_role_policy(
            # GetItem, Query: the reconciliation's check of what is recorded already
            # (an Express run by its name among its object's items).
            iam.PolicyStatement(
                actions=["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Query"],
                resources=[table.table_arn],
            )
        )
        self.recorder.add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:ListExecutions"], resources=[state_machine.state_machine_arn]
            )
        )
        # Marking the object whose verdict was never applied: an eTag-checked
        # HEAD (GetObject), its tags. ListBucket: a vanished object is 404, not 403.
        self.recorder.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket", "s3:ListBucketVersions"], resources=[source.bucket_arn]
            )
        )
        self.recorder.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:GetObjectTagging",
                    "s3:GetObjectVersionTagging",
                    "s3:PutObjectTagging",
                    "s3:PutObjectVersionTagging",
                ],
                resources=[source.arn_for_objects("*")],
            )
        )
        if notify_webhook is not None:
            # The function itself, not its versions (grant_invoke would add ':*').
            self.recorder.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["lambda:InvokeFunction"], resources=[notify_webhook.function_arn]
                )
            )
