"""The local execution harness: the whole pipeline on this machine.

AWS is emulated by moto; moto's Step Functions interpreter runs the real
``statemachines/scan_object.asl.json``; its Lambda tasks are routed to the real
handlers in-process (moto would otherwise start a Docker container per call);
ClamAV is the real clamd. Retry intervals are recorded instead of slept, so a
retried execution takes milliseconds and the tests can still see the waits.

The routing uses moto's private ``LambdaFunction._invoke_lambda``: moto is
pinned exactly in requirements-dev.txt for that reason.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
STATE_MACHINE_NAME = "scan-object"
MAX_RECEIVE_COUNT = 5

# Environment the handlers see, as the stack would provision it.
_BASE_ENV = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "S3VirusScanner",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}


@dataclass
class LambdaContext:
    """What Powertools reads from Lambda's context object."""

    function_name: str
    memory_limit_in_mb: int = 128
    invoked_function_arn: str = ""
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass(frozen=True)
class ExecutionReport:
    name: str
    arn: str
    status: str
    states: list[str]
    output: dict[str, Any]
    input: dict[str, Any]
    error: str | None
    cause: str | None
    events: list[dict[str, Any]]

    def count(self, event_type: str, state: str | None = None) -> int:
        """How many history events of this type (for this state's task) there are."""
        return sum(
            1
            for e in self.events
            if e["type"] == event_type and (state is None or e.get("state") == state)
        )


@dataclass
class HarnessOptions:
    work_dir: Path
    quarantine: bool = True
    webhook_url: str | None = None
    webhook_secret: str | None = None
    max_object_size_mb: int | None = None
    source_bucket: str = "uploads"
    quarantine_bucket: str = "uploads-quarantine"
    definitions_bucket: str = "scanner-definitions"
    table_name: str = "scan-audit"
    versioned: bool = True
    object_lock: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


class LocalScanner:
    """Create everything, run scans, report what happened.

    Use as a context manager; it starts moto's ``mock_aws`` unless one is
    already active (``own_mock=False``).
    """

    def __init__(self, options: HarnessOptions, own_mock: bool = True) -> None:
        self.options = options
        self.own_mock = own_mock
        self.retry_waits: list[float] = []
        self.invocations: list[str] = []
        self._faults: dict[str, list[BaseException]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._mock: Any = None
        self._patches: contextlib.ExitStack | None = None
        self._saved_env: dict[str, str | None] = {}
        self.function_arns: dict[str, str] = {}

    # -- set-up --------------------------------------------------------------

    def __enter__(self) -> LocalScanner:
        self._set_env(_BASE_ENV)
        self._patches = contextlib.ExitStack()
        if self.own_mock:
            from moto import mock_aws

            self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
            self._patches.enter_context(self._mock)
        self._patches.enter_context(self._route_lambda_to_handlers())
        self._patches.enter_context(self._record_retry_waits())
        self._patches.enter_context(self._complete_s3_events())
        self._patches.enter_context(self._serialize_asl_parsing())
        try:
            self._create_resources()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._patches is not None:
            self._patches.close()
            self._patches = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        _reset_settings()

    def _set_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        _reset_settings()

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)

    def _create_resources(self) -> None:
        o = self.options
        s3 = self.client("s3")
        for bucket in filter(None, [o.source_bucket, o.quarantine and o.quarantine_bucket]):
            lock = {"ObjectLockEnabledForBucket": True} if o.object_lock else {}
            s3.create_bucket(Bucket=bucket, **lock)
            if o.versioned:
                s3.put_bucket_versioning(
                    Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
                )
        s3.create_bucket(Bucket=o.definitions_bucket)
        s3.put_bucket_versioning(
            Bucket=o.definitions_bucket, VersioningConfiguration={"Status": "Enabled"}
        )

        self._create_table()

        sqs = self.client("sqs")
        dlq_url = sqs.create_queue(QueueName="scan-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.queue_url = sqs.create_queue(
            QueueName="scan-queue",
            Attributes={
                "VisibilityTimeout": "0",
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
                ),
            },
        )["QueueUrl"]
        self.dlq_url = dlq_url
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        s3.put_bucket_notification_configuration(
            Bucket=o.source_bucket,
            NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
            },
        )

        env = self._function_env()
        self._set_env(env)
        from functions.shared.config import load_settings

        # A warm scanner from an earlier harness keeps its clamd only if it fits.
        settings = load_settings()
        reset_scanner_if(lambda scanner: scanner.settings != settings)
        self._create_functions(env)
        self._create_state_machine()
        self._set_env({"STATE_MACHINE_ARN": self.state_machine_arn})

    def _create_table(self) -> None:
        from functions.record_audit.audit import (
            BY_VERDICT_INDEX,
            FAILURE_KEY,
            FAILURES_INDEX,
            PARTITION_KEY,
            SORT_KEY,
        )

        self.client("dynamodb").create_table(
            TableName=self.options.table_name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
                {"AttributeName": SORT_KEY, "AttributeType": "S"},
                {"AttributeName": "verdict", "AttributeType": "S"},
                {"AttributeName": FAILURE_KEY, "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
                {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": BY_VERDICT_INDEX,
                    "KeySchema": [
                        {"AttributeName": "verdict", "KeyType": "HASH"},
                        {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                },
                {
                    "IndexName": FAILURES_INDEX,
                    "KeySchema": [
                        {"AttributeName": FAILURE_KEY, "KeyType": "HASH"},
                        {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                },
            ],
        )

    def _function_env(self) -> dict[str, str]:
        o = self.options
        env = {
            "DDB_TABLE_NAME": o.table_name,
            "QUARANTINE_BUCKET_NAME": o.quarantine_bucket if o.quarantine else "",
            "WEBHOOK_URL": o.webhook_url or "",
            "WEBHOOK_SECRET": o.webhook_secret or "",
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
        return env

    def _create_functions(self, env: dict[str, str]) -> None:
        from statemachines import STATE_MACHINE_FUNCTIONS

        iam = self.client("iam")
        role_arn = iam.create_role(
            RoleName="scanner-local",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        lam = self.client("lambda")
        for name in ("start_scan", *STATE_MACHINE_FUNCTIONS):
            arn = lam.create_function(
                FunctionName=name.replace("_", "-"),
                Runtime="python3.12",
                Role=role_arn,
                Handler=f"functions.{name}.app.lambda_handler",
                Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18},  # empty zip: never run
                Environment={"Variables": env},
            )["FunctionArn"]
            self.function_arns[name] = arn

    def _create_state_machine(self) -> None:
        from statemachines import render, substitutions

        definition = render(
            substitutions(self.function_arns, webhook_configured=bool(self.options.webhook_url))
        )
        self.state_machine_arn = self.client("stepfunctions").create_state_machine(
            name=STATE_MACHINE_NAME,
            definition=definition,
            roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/scanner-local",
        )["stateMachineArn"]

    # -- moto seams ------------------------------------------------------------

    @contextlib.contextmanager
    def _route_lambda_to_handlers(self) -> Iterator[None]:
        from moto.awslambda.models import LambdaFunction

        harness = self

        def invoke(function: Any, event: Any = None) -> tuple[str, bool, str]:
            return harness._invoke(function.function_name.replace("-", "_"), event)

        original = LambdaFunction._invoke_lambda
        LambdaFunction._invoke_lambda = invoke  # type: ignore[method-assign]
        try:
            yield
        finally:
            LambdaFunction._invoke_lambda = original  # type: ignore[method-assign]

    @contextlib.contextmanager
    def _record_retry_waits(self) -> Iterator[None]:
        from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

        harness = self

        class _Clock:
            @staticmethod
            def sleep(seconds: float) -> None:
                harness.retry_waits.append(seconds)

        original = retrier_decl.time
        retrier_decl.time = _Clock  # type: ignore[assignment]
        try:
            yield
        finally:
            retrier_decl.time = original

    @contextlib.contextmanager
    def _serialize_asl_parsing(self) -> Iterator[None]:
        """Parse one definition at a time.

        moto 5.2's ASL Preprocessor keeps its query-language scope stack in a
        class attribute shared by every instance, and each execution parses the
        definition in its own thread: executions started together corrupt each
        other's stack (IndexError) and hang RUNNING. Seen with thousands of
        executions in flight (scanctl local on 10,000 files).
        """
        from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

        original = AmazonStateLanguageParser.parse
        lock = threading.Lock()

        def parse(definition: str) -> Any:
            with lock:
                return original(definition)

        AmazonStateLanguageParser.parse = staticmethod(parse)  # type: ignore[method-assign]
        try:
            yield
        finally:
            AmazonStateLanguageParser.parse = staticmethod(original)  # type: ignore[method-assign]

    @contextlib.contextmanager
    def _complete_s3_events(self) -> Iterator[None]:
        """Add what real S3 puts in a notification and moto leaves out.

        S3 sends the ``versionId`` of the new version (versioned buckets) and a
        ``sequencer`` that orders events for one key; moto 5.2 sends neither,
        and the scanner relies on both.
        """
        from moto.s3 import notifications

        original = notifications._get_s3_event
        counter = iter(range(1, 1 << 62))

        def get_s3_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> Any:
            event = original(event_name, bucket, key, notification_id)
            obj = event["Records"][0]["s3"]["object"]
            if getattr(bucket, "is_versioned", False) and getattr(key, "version_id", None):
                obj["versionId"] = key.version_id
            obj["sequencer"] = f"{int(time.time() * 1000):012X}{next(counter):08X}"
            return event

        notifications._get_s3_event = get_s3_event
        try:
            yield
        finally:
            notifications._get_s3_event = original

    def _invoke(self, name: str, event: Any) -> tuple[str, bool, str]:
        """Run the real handler, as Lambda would: one invocation per container at a time."""
        lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            self.invocations.append(name)
            try:
                faults = self._faults.get(name)
                if faults:
                    raise faults.pop(0)
                module = importlib.import_module(f"functions.{name}.app")
                result = self._call(module, name, event if event is not None else {})
                return json.dumps(result), False, ""
            except Exception as err:  # noqa: BLE001 - reported to Step Functions like Lambda does
                payload = {
                    "errorType": type(err).__name__,
                    "errorMessage": str(err),
                    "stackTrace": traceback.format_exception(err)[-3:],
                }
                return json.dumps(payload), True, ""

    def _call(self, module: Any, name: str, event: Any) -> Any:
        context = LambdaContext(
            function_name=name, invoked_function_arn=self.function_arns.get(name, "")
        )
        try:
            return module.lambda_handler(event, context)
        finally:
            # With metrics disabled Powertools never flushes, and at 100 buffered
            # values it prints them anyway: drop them after each invocation.
            metrics = getattr(module, "metrics", None)
            if metrics is not None:
                metrics.clear_metrics()

    def fail_next(self, function: str, error: BaseException, times: int = 1) -> None:
        """Make the next ``times`` invocations of ``function`` raise ``error``.

        For faults no real component here can produce (Lambda's own service
        errors); prefer a real fault (a dead clamd, an HTTP 500) where one exists.
        """
        self._faults.setdefault(function, []).extend([error] * times)

    # -- using it ---------------------------------------------------------------

    def publish_definitions(self, directory: Path) -> dict[str, Any]:
        from functions.shared.config import load_settings
        from functions.shared.definitions import publish_directory

        result = publish_directory(
            self.client("s3"),
            self.options.definitions_bucket,
            load_settings().definitions_prefix,
            directory,
        )
        return result.manifest

    def upload(
        self, key: str, body: bytes, tags: dict[str, str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        from urllib.parse import urlencode

        args: dict[str, Any] = {"Bucket": self.options.source_bucket, "Key": key, "Body": body}
        if tags:
            args["Tagging"] = urlencode(tags)
        args.update(extra)
        return self.client("s3").put_object(**args)

    def drain(self, max_rounds: int = 100) -> list[str]:
        """Feed the queue to start_scan like Lambda's SQS event source does.

        Failed records (batchItemFailures) become visible again and, after
        MAX_RECEIVE_COUNT receives, SQS moves them to the DLQ. Returns the
        names of the executions the consumed records started (or found
        started: a redelivery maps to the same name), in order, once each.
        """
        from functions.shared.errors import InvalidInput
        from functions.shared.naming import execution_name
        from functions.shared.s3event import parse_body
        from functions.start_scan import app as start_app

        sqs = self.client("sqs")
        names: dict[str, None] = {}  # ordered set
        for _ in range(max_rounds):
            messages = sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                AttributeNames=["All"],
            ).get("Messages", [])
            if not messages:
                break
            event = {"Records": [_sqs_record(m, self.queue_url) for m in messages]}
            response = self._call(start_app, "start_scan", event)
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            for message in messages:
                if message["MessageId"] in failed:
                    continue
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                # The names are derived as start_scan derives them; listing every
                # execution instead would make each drain slower than the last.
                try:
                    events = parse_body(message["Body"])
                except InvalidInput:
                    continue
                for event in events:
                    names.setdefault(execution_name(event.object))
        return list(names)

    def start(self, input_: dict[str, Any], name: str | None = None) -> str:
        name = name or f"manual-{uuid.uuid4().hex[:12]}"
        self.client("stepfunctions").start_execution(
            stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(input_)
        )
        return name

    def execution_arn(self, name: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def wait(self, names: list[str], timeout_s: float = 120.0) -> list[ExecutionReport]:
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout_s
        reports = []
        for name in names:
            arn = self.execution_arn(name)
            while True:
                described = sfn.describe_execution(executionArn=arn)
                if described["status"] != "RUNNING":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"execution {name} still running after {timeout_s}s")
                time.sleep(0.01)
            reports.append(self._report(sfn, described))
        return reports

    def scan(self, key: str, body: bytes, **upload_args: Any) -> ExecutionReport:
        """Upload one object and follow it to the end of its execution."""
        self.upload(key, body, **upload_args)
        names = self.drain()
        if len(names) != 1:
            raise AssertionError(f"expected one execution for {key}, got {names}")
        return self.wait(names)[0]

    def _report(self, sfn: Any, described: dict[str, Any]) -> ExecutionReport:
        history = sfn.get_execution_history(executionArn=described["executionArn"])["events"]
        events = []
        states = []
        current = None
        for event in history:
            entered = event.get("stateEnteredEventDetails")
            if entered:
                current = entered["name"]
                states.append(current)
            events.append({"type": event["type"], "state": current})
        return ExecutionReport(
            name=described["name"],
            arn=described["executionArn"],
            status=described["status"],
            states=states,
            output=json.loads(described.get("output") or "{}"),
            input=json.loads(described.get("input") or "{}"),
            error=described.get("error"),
            cause=described.get("cause"),
            events=events,
        )

    # -- reading results ------------------------------------------------------------

    def audit_items(self, key: str) -> list[dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        deserialize = TypeDeserializer().deserialize
        items = self.client("dynamodb").query(
            TableName=self.options.table_name,
            KeyConditionExpression="#o = :o",
            ExpressionAttributeNames={"#o": "object"},
            ExpressionAttributeValues={":o": {"S": f"s3://{self.options.source_bucket}/{key}"}},
        )["Items"]
        return [{k: deserialize(v) for k, v in item.items()} for item in items]

    def tags(
        self, key: str, version_id: str | None = None, bucket: str | None = None
    ) -> dict[str, str]:
        args: dict[str, Any] = {"Bucket": bucket or self.options.source_bucket, "Key": key}
        if version_id:
            args["VersionId"] = version_id
        tag_set = self.client("s3").get_object_tagging(**args)["TagSet"]
        return {t["Key"]: t["Value"] for t in tag_set}

    def dlq_messages(self) -> list[dict[str, Any]]:
        return (
            self.client("sqs")
            .receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10, AttributeNames=["All"])
            .get("Messages", [])
        )


def _sqs_record(message: dict[str, Any], queue_url: str) -> dict[str, Any]:
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_url.rsplit('/', 1)[-1]}",
        "awsRegion": REGION,
    }


def _reset_settings() -> None:
    from functions.shared.config import load_settings

    load_settings.cache_clear()


def reset_scanner_if(predicate: Callable[[Any], bool]) -> None:
    """Drop the warm scanner (stopping its clamd) when it no longer fits."""
    # Not imported here if it was not yet: importing it starts its warm-up.
    scan_app = sys.modules.get("functions.scan_object.app")
    if scan_app is None:
        return
    scanner = scan_app._scanner
    if scanner is not None and predicate(scanner):
        scanner.engine.stop()
        scan_app._scanner = None
