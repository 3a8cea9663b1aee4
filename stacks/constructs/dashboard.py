"""Dashboard: the scanner at a glance, one CloudWatch dashboard per stack.

Verdicts and scan times come from the functions' own metrics (Powertools EMF,
namespace ``S3VirusScanner``, dimension ``service`` = the function's name);
executions, queues and throttles from the services' metrics.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.constants import METRICS_NAMESPACE

VERDICTS = ("clean", "infected", "unscannable", "skipped")
PERIOD = Duration.minutes(5)


def _ours(name: str, service: str, statistic: str = "Sum", label: str | None = None) -> cw.Metric:
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": service},
        statistic=statistic,
        period=PERIOD,
        label=label or name,
    )


class Dashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        machines: list[sfn.StateMachine],
        queue: sqs.IQueue,
        dead_letter_queues: dict[str, sqs.IQueue],
        scanner: lambda_.IFunction,
        functions: list[lambda_.IFunction],
    ) -> None:
        super().__init__(scope, construct_id)
        self.name = f"{Stack.of(self).stack_name}-scanner"
        executions = []
        for machine in machines:
            kind = "Express" if machine is not machines[0] else "Standard"
            executions += [
                machine.metric_succeeded(period=PERIOD, label=f"{kind} succeeded"),
                machine.metric_failed(period=PERIOD, label=f"{kind} failed"),
                machine.metric_timed_out(period=PERIOD, label=f"{kind} timed out"),
            ]
        self.dashboard = cw.Dashboard(
            self,
            "Dashboard",
            dashboard_name=self.name,
            default_interval=Duration.hours(24),
            widgets=[
                [
                    cw.GraphWidget(
                        title="Objects scanned, by verdict",
                        left=[_ours(f"Verdict_{v}", "scan-object", label=v) for v in VERDICTS],
                        stacked=True,
                        width=12,
                    ),
                    cw.GraphWidget(
                        title="Scan duration (ms)",
                        left=[
                            _ours("ScanDuration", "scan-object", "p50", "p50"),
                            _ours("ScanDuration", "scan-object", "p95", "p95"),
                        ],
                        width=12,
                    ),
                ],
                [
                    cw.GraphWidget(
                        title="Executions",
                        left=executions,
                        width=12,
                    ),
                    cw.GraphWidget(
                        title="Queues: waiting to start, and dead letters",
                        left=[
                            queue.metric_approximate_number_of_messages_visible(
                                period=PERIOD, statistic="Maximum", label="scan queue"
                            )
                        ],
                        right=[
                            dlq.metric_approximate_number_of_messages_visible(
                                period=PERIOD, statistic="Maximum", label=label
                            )
                            for label, dlq in dead_letter_queues.items()
                        ],
                        width=12,
                    ),
                ],
                [
                    cw.GraphWidget(
                        title="Definitions age (hours)",
                        left=[
                            _ours("DefinitionsAgeHours", "fetch-definitions", "Maximum", "age"),
                            _ours("StaleDefinitionsUsed", "scan-object", label="stale scans"),
                        ],
                        width=12,
                    ),
                    cw.GraphWidget(
                        title="Throttles",
                        left=[
                            *[
                                fn.metric_throttles(period=PERIOD, label=fn.node.id)
                                for fn in functions
                            ],
                            sfn.StateTransitionMetric.metric_throttled_events(
                                period=PERIOD, label="state transitions throttled (account)"
                            ),
                        ],
                        right=[
                            scanner.metric(
                                "ConcurrentExecutions",
                                period=PERIOD,
                                statistic="Maximum",
                                label="scanners running",
                            )
                        ],
                        width=12,
                    ),
                ],
            ],
        )
