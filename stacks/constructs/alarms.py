"""Alarms: what an operator must hear about without opening a console."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.constants import METRICS_NAMESPACE
from statemachines import NOT_KEPT_ERROR


class Alarms(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        dead_letter_queue: sqs.IQueue,
        failure_dead_letter_queue: sqs.IQueue,
        state_machine: sfn.StateMachine,
        updater: lambda_.IFunction,
        topic_arn: str | None,
        express_state_machine: sfn.StateMachine | None = None,
        express_log_group: logs.ILogGroup | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        five_minutes = Duration.minutes(5)
        self.alarms = {
            # A notification no execution was started for: nothing is lost while
            # it sits in the DLQ (14 days), but someone must look.
            "DeadLetters": dead_letter_queue.metric_approximate_number_of_messages_visible(
                period=five_minutes, statistic="Maximum"
            ),
            # A failed run: recorded in the audit table, redrivable in the console.
            "FailedScans": state_machine.metric_failed(period=five_minutes, statistic="Sum"),
            # A failure the recorder could not record (or announce): the event
            # waits here; the execution itself is still FAILED and redrivable.
            "UnrecordedFailures": (
                failure_dead_letter_queue.metric_approximate_number_of_messages_visible(
                    period=five_minutes, statistic="Maximum"
                )
            ),
            # The cache is not being refreshed; scans go on with older definitions.
            "DefinitionsUpdateFailed": updater.metric_errors(period=Duration.hours(1)),
            # ClamAV's CDN answered 429 or 403 (to the updater or a scanner's
            # fallback): nothing calls it until the cool-down ends, and the set
            # ages meanwhile (StaleDefinitions follows if it lasts).
            "DefinitionsCoolDown": cloudwatch.Metric(
                namespace=METRICS_NAMESPACE,
                metric_name="DefinitionsCoolDown",
                dimensions_map={"service": "update-definitions"},
                period=Duration.hours(1),
                statistic="Maximum",
            ),
            # Scans ran on definitions older than MAX_DEFINITIONS_AGE_HOURS.
            "StaleDefinitions": cloudwatch.Metric(
                namespace=METRICS_NAMESPACE,
                metric_name="StaleDefinitions",
                dimensions_map={"service": "fetch-definitions"},
                period=Duration.hours(1),
                statistic="Sum",
            ),
        }
        if express_state_machine is not None and express_log_group is not None:
            # An Express run records its own failure; one that fails is on the
            # dashboard and here, like a Standard one.
            self.alarms["FailedExpressScans"] = express_state_machine.metric_failed(
                period=five_minutes, statistic="Sum"
            )
            # ...and one whose recorder and its DLQ both failed ends with
            # FailureNotKept: only its log holds it (and the hourly reconciliation).
            self.alarms["UnkeptExpressFailures"] = logs.MetricFilter(
                self,
                "UnkeptExpressFailuresFilter",
                log_group=express_log_group,
                filter_pattern=logs.FilterPattern.all(
                    logs.FilterPattern.string_value("$.type", "=", "ExecutionFailed"),
                    logs.FilterPattern.string_value("$.details.error", "=", NOT_KEPT_ERROR),
                ),
                metric_namespace=METRICS_NAMESPACE,
                metric_name="UnkeptExpressFailures",
                metric_value="1",
            ).metric(period=five_minutes, statistic="Sum")
        topic = sns.Topic.from_topic_arn(self, "Topic", topic_arn) if topic_arn else None
        for name, metric in self.alarms.items():
            alarm = metric.create_alarm(
                self,
                name,
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=f"S3 virus scanner: {name}",
            )
            if topic is not None:
                alarm.add_alarm_action(actions.SnsAction(topic))
