"""Start one scan execution per object version."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from functions.shared.aws import error_code, is_transient
from functions.shared.errors import StartExecutionThrottled
from functions.shared.s3event import ObjectCreated, execution_input


@dataclass(frozen=True)
class Started:
    name: str
    already_existed: bool


def start_scan(sfn: Any, state_machine_arn: str, event: ObjectCreated, message_id: str) -> Started:
    """Start the execution; an existing one with the same name counts as started.

    The name is derived from the object version, so a redelivered message lands
    on ExecutionAlreadyExists instead of scanning twice.
    """
    name = event.execution_name
    try:
        sfn.start_execution(
            stateMachineArn=state_machine_arn,
            name=name,
            input=json.dumps(execution_input(event, message_id)),
        )
    except ClientError as err:
        code = error_code(err)
        if code == "ExecutionAlreadyExists":
            return Started(name=name, already_existed=True)
        if is_transient(err) or code == "ExecutionLimitExceeded":
            raise StartExecutionThrottled(f"StartExecution {name}: {code}") from err
        raise
    return Started(name=name, already_existed=False)
