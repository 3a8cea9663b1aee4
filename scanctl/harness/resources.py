"""The deployment, in moto: what the stack creates, named as the harness options say."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanctl.harness.environment import ACCOUNT_ID, REGION

STATE_MACHINE_NAME = "scan-object"
EXPRESS_STATE_MACHINE_NAME = "express-scan"
EXPRESS_LOG_GROUP = "/aws/vendedlogs/states/express-scan"
# Not created in moto (scanctl/harness/rescan.py emulates its Distributed Map);
# its calls are recorded under this name.
RESCAN_STATE_MACHINE_NAME = "scan-rescan"
MAX_RECEIVE_COUNT = 5
ROLE_NAME = "scanner-local"


@dataclass
class HarnessOptions:
    work_dir: Path
    quarantine: bool = True
    webhook_url: str | None = None
    webhook_secret: str | None = None
    max_object_size_mb: int | None = None
    source_bucket: str = "uploads"
    quarantine_bucket: str = "quarantine"
    definitions_bucket: str = "scanner-definitions"
    table_name: str = "scan-audit"
    versioned: bool = True
    quarantine_versioned: bool | None = None  # None: like the source bucket
    object_lock: bool = False
    workflow_type: str = "STANDARD"  # or EXPRESS: both machines, small objects to Express
    express_max_object_mb: int | None = None
    # Shortens the Express Scan Object's TimeoutSeconds so a test can pass it.
    express_scan_timeout_s: int | None = None
    # Lambda's throttling at a reserved concurrency, per function (the harness
    # runs one invocation of a function at a time: only 1 is emulated); and the
    # state machine's retry waits slept at this fraction of their length (0:
    # recorded, not slept).
    reserved_concurrency: dict[str, int] = field(default_factory=dict)
    retry_wait_scale: float = 0.0
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Deployment:
    queue_url: str = ""
    dlq_url: str = ""
    failure_dlq_url: str = ""
    state_machine_arn: str = ""
    express_state_machine_arn: str = ""
    # The Express machine's execution log (level ALL, with execution data).
    express_log_group: str = ""
    rescan_state_machine_arn: str = (
        f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{RESCAN_STATE_MACHINE_NAME}"
    )
    function_arns: dict[str, str] = field(default_factory=dict)


def function_env(o: HarnessOptions, deployment: Deployment) -> dict[str, str]:
    """What the stack provisions to the functions (here: one process, one environment)."""
    return {
        "SCAN_QUEUE_URL": deployment.queue_url,
        "EXPRESS_MAX_OBJECT_MB": str(o.express_max_object_mb or ""),
        "SOURCE_BUCKET_NAME": o.source_bucket,
        "DDB_TABLE_NAME": o.table_name,
        "QUARANTINE_BUCKET_NAME": o.quarantine_bucket if o.quarantine else "",
        "WEBHOOK_URL": o.webhook_url or "",
        "WEBHOOK_SECRET": o.webhook_secret or "",
        # The failure recorder sends its notices through Notify Webhook.
        "NOTIFY_WEBHOOK_FUNCTION": "notify-webhook" if o.webhook_url else "",
        "DEFINITIONS_BUCKET_NAME": o.definitions_bucket,
        "CLAMAV_WORK_DIR": str(o.work_dir),
        "MAX_OBJECT_SIZE_MB": str(o.max_object_size_mb or ""),
        "ENVIRONMENT": "local",
        # The freshclam fallback must never leave this machine: point it at a
        # loopback port where nothing listens unless a caller says otherwise.
        "CLAMAV_PRIVATE_MIRROR": "http://127.0.0.1:9",
        "FRESHCLAM_MAX_ATTEMPTS": "1",  # freshclam waits between its own attempts
        **o.extra_env,
    }


def create_storage(client: Any, o: HarnessOptions) -> None:
    """Source and quarantine buckets (as the user has them), the cache and the table."""
    from functions.record_audit.schema import create_table_arguments

    s3 = client("s3")
    lock = {"ObjectLockEnabledForBucket": True} if o.object_lock else {}
    s3.create_bucket(Bucket=o.source_bucket, **lock)
    if o.versioned:
        _enable_versioning(s3, o.source_bucket)
    if o.quarantine:
        s3.create_bucket(Bucket=o.quarantine_bucket, **lock)
        if o.versioned if o.quarantine_versioned is None else o.quarantine_versioned:
            _enable_versioning(s3, o.quarantine_bucket)
    s3.create_bucket(Bucket=o.definitions_bucket)
    _enable_versioning(s3, o.definitions_bucket)
    client("dynamodb").create_table(**create_table_arguments(o.table_name))


def _enable_versioning(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def create_ingest(client: Any, o: HarnessOptions, deployment: Deployment) -> None:
    """The scan queue with its DLQ, fed by the source bucket's notifications."""
    from functions.shared.s3event import RESTORE_COMPLETED

    sqs = client("sqs")
    deployment.dlq_url = sqs.create_queue(QueueName="scan-dlq")["QueueUrl"]
    dlq_arn = _queue_arn(sqs, deployment.dlq_url)
    deployment.queue_url = sqs.create_queue(
        QueueName="scan-queue",
        Attributes={
            "VisibilityTimeout": "0",
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
            ),
        },
    )["QueueUrl"]
    client("s3").put_bucket_notification_configuration(
        Bucket=o.source_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": _queue_arn(sqs, deployment.queue_url),
                    "Events": ["s3:ObjectCreated:*", f"s3:{RESTORE_COMPLETED}"],
                }
            ]
        },
    )


def create_failure_dlq(client: Any, deployment: Deployment) -> None:
    """Where a status-change event goes when the failure recorder failed it three times."""
    deployment.failure_dlq_url = client("sqs").create_queue(QueueName="failure-dlq")["QueueUrl"]


def _queue_arn(sqs: Any, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def create_functions(client: Any, env: dict[str, str], deployment: Deployment) -> None:
    """One function per folder the state machine and the ingest use; never run by moto."""
    from statemachines import STATE_MACHINE_FUNCTIONS

    role_arn = client("iam").create_role(
        RoleName=ROLE_NAME,
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    lam = client("lambda")
    for name in dict.fromkeys(
        (
            "start_scan",
            "record_failure",
            "rescan_batch",
            "update_definitions",
            *STATE_MACHINE_FUNCTIONS,
        )
    ):
        deployment.function_arns[name] = lam.create_function(
            FunctionName=name.replace("_", "-"),
            Runtime="python3.12",
            Role=role_arn,
            Handler=f"functions.{name}.app.lambda_handler",
            Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18},  # empty zip: never run
            Environment={"Variables": env},
        )["FunctionArn"]


def create_state_machine(client: Any, o: HarnessOptions, deployment: Deployment) -> None:
    """The real ASL, filled by the same substitutions the stack uses."""
    from statemachines import render

    sfn = client("stepfunctions")
    role = f"arn:aws:iam::{ACCOUNT_ID}:role/{ROLE_NAME}"
    deployment.state_machine_arn = sfn.create_state_machine(
        name=STATE_MACHINE_NAME,
        definition=render(bool(o.webhook_url), deployment.function_arns),
        roleArn=role,
    )["stateMachineArn"]
    if o.workflow_type == "EXPRESS":
        deployment.express_state_machine_arn = sfn.create_state_machine(
            name=EXPRESS_STATE_MACHINE_NAME,
            definition=_express_definition(o, deployment),
            roleArn=role,
            type="EXPRESS",
        )["stateMachineArn"]
        deployment.express_log_group = EXPRESS_LOG_GROUP
        client("logs").create_log_group(logGroupName=EXPRESS_LOG_GROUP)


def _express_definition(o: HarnessOptions, deployment: Deployment) -> str:
    from statemachines import render

    text = render(
        bool(o.webhook_url),
        deployment.function_arns,
        express=True,
        failure_queue_url=deployment.failure_dlq_url,
    )
    if o.express_scan_timeout_s is None:
        return text
    definition = json.loads(text)
    definition["States"]["Scan Object"]["TimeoutSeconds"] = o.express_scan_timeout_s
    return json.dumps(definition)
