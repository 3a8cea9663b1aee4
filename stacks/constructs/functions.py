"""A Lambda function the way every function of this stack is built."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Size
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.constants import METRICS_NAMESPACE
from stacks.constructs.images import image_code

LOG_RETENTION = logs.RetentionDays.THREE_MONTHS


def step_function(
    scope: Construct,
    construct_id: str,
    *,
    name: str,
    target: str,
    environment: dict[str, str],
    memory_mb: int,
    timeout: Duration,
    ephemeral_mb: int = 512,
    reserved_concurrency: int | None = None,
) -> lambda_.DockerImageFunction:
    """``name`` is the folder under functions/ (``scan_object``, ...)."""
    log_group = logs.LogGroup(
        scope,
        f"{construct_id}Logs",
        retention=LOG_RETENTION,
        removal_policy=RemovalPolicy.DESTROY,
    )
    return lambda_.DockerImageFunction(
        scope,
        construct_id,
        code=image_code(target, f"functions.{name}.app.lambda_handler"),
        memory_size=memory_mb,
        timeout=timeout,
        ephemeral_storage_size=Size.mebibytes(ephemeral_mb),
        architecture=lambda_.Architecture.X86_64,
        tracing=lambda_.Tracing.ACTIVE,
        reserved_concurrent_executions=reserved_concurrency,
        log_group=log_group,
        environment={
            "POWERTOOLS_SERVICE_NAME": name.replace("_", "-"),
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": "INFO",
            **environment,
        },
        description=f"S3 virus scanner: {name.replace('_', ' ')}",
    )
