"""Result events: every recorded outcome as an EventBridge ``Object Scan Result``.

Record Audit publishes completed runs and the failure recorder failed ones,
each right after its audit write (functions/shared/results_bus.py), so no
state is added to the state machine. The events go to the account's default
bus, or to EVENT_BUS_ARN.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct


class ResultEvents(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        publishers: list[lambda_.Function],
        bus_arn: str | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bus_arn = bus_arn or Stack.of(self).format_arn(
            service="events",
            resource="event-bus",
            resource_name="default",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        for fn in publishers:
            if bus_arn:
                fn.add_environment("EVENT_BUS_ARN", bus_arn)
            fn.add_to_role_policy(
                iam.PolicyStatement(actions=["events:PutEvents"], resources=[self.bus_arn])
            )
