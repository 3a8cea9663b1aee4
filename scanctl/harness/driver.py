"""``LocalScanner``: the deployment in moto, driven like AWS drives it."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import boto3

from scanctl.harness import principals, redrive, resources, seams
from scanctl.harness.environment import ACCOUNT_ID, BASE_ENV, REGION, Environment
from scanctl.harness.invoker import Invoker
from scanctl.harness.reports import ExecutionReport, read_report
from scanctl.harness.resources import MAX_RECEIVE_COUNT, HarnessOptions
from scanctl.harness.status_events import StatusChanges

__all__ = ["MAX_RECEIVE_COUNT", "HarnessOptions", "LocalScanner"]


class LocalScanner:
    """Create everything, run scans, report what happened.

    Use as a context manager; it starts moto's ``mock_aws`` unless one is
    already active (``own_mock=False``).
    """

    # Called with each harness as it closes. A watcher (the tests' IAM check)
    # makes every harness record its AWS calls, by principal, in ``calls``.
    watchers: ClassVar[list[Callable[[LocalScanner], None]]] = []

    def __init__(self, options: HarnessOptions, own_mock: bool = True) -> None:
        self.options = options
        self.calls: list[principals.AwsCall] = []
        self.own_mock = own_mock
        self.retry_waits: list[float] = []
        self.invoker = Invoker()
        self.deployment = resources.Deployment()
        self.status_changes = StatusChanges(self._record_failure)
        self.status_changes.log_express = self._log_express
        self._env = Environment()
        self._patches: contextlib.ExitStack | None = None

    # -- set-up --------------------------------------------------------------

    def __enter__(self) -> LocalScanner:
        self._env.set(BASE_ENV)
        self._patches = contextlib.ExitStack()
        if self.own_mock:
            from moto import mock_aws

            self._patches.enter_context(
                mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
            )
        self._patches.enter_context(principals.carried_into_threads())
        self._patches.enter_context(principals.state_machines_act_for_themselves())
        if self.watchers:
            self._patches.enter_context(principals.recording(self.calls))
        self._patches.enter_context(seams.route_lambda(self.invoker.invoke))
        self._patches.enter_context(
            seams.record_retry_waits(self.retry_waits, self.options.retry_wait_scale)
        )
        self.invoker.reserved = dict(self.options.reserved_concurrency)
        self._patches.enter_context(seams.complete_s3_events())
        self._patches.enter_context(seams.serialize_asl_parsing())
        self._patches.enter_context(seams.ignore_bucket_policies())
        self._patches.enter_context(seams.tag_archived_objects())
        self._patches.enter_context(seams.ranged_reads())
        self._patches.enter_context(redrive.emulate_redrive())
        self._patches.enter_context(self.status_changes.emitted())
        try:
            self._create()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        closing = self._patches is not None
        if self._patches is not None:
            self._settle()
            self._patches.close()
            self._patches = None
        self._env.restore()
        if closing:
            for watcher in self.watchers:
                watcher(self)

    def _log_express(self, execution: Any) -> None:
        """Step Functions writing an Express execution's events to its log group (its
        own delivery, on nobody's behalf: straight into the emulated service)."""
        from moto.logs.models import logs_backends

        from scanctl.harness.environment import ACCOUNT_ID, REGION
        from scanctl.harness.status_events import express_log_events

        group = self.deployment.express_log_group
        if not group:
            return
        backend = logs_backends[ACCOUNT_ID][REGION]
        stream = f"states/{execution.name}"
        backend.create_log_stream(group, stream)
        backend.put_log_events(group, stream, express_log_events(execution))

    def abandon(self) -> None:
        """Stop every execution still running (Ctrl-C): nobody will wait for them."""
        sfn = self.client("stepfunctions")
        self._abandoned = True
        for machine in filter(None, self.machines()):
            for page in sfn.get_paginator("list_executions").paginate(
                stateMachineArn=machine, statusFilter="RUNNING"
            ):
                for execution in page["executions"]:
                    with contextlib.suppress(Exception):  # it may just have ended
                        sfn.stop_execution(
                            executionArn=execution["executionArn"], cause="interrupted"
                        )

    def machines(self) -> list[str]:
        return [self.state_machine_arn, self.deployment.express_state_machine_arn]

    def _settle(self, timeout_s: float = 60.0) -> None:
        """Let executions still running (a re-run nobody waited for) end while the
        emulated AWS they call still exists; a thread outliving it would fail."""
        sfn = self.client("stepfunctions")
        machines = self.machines()
        if getattr(self, "_abandoned", False):
            timeout_s = 2.0
        deadline = time.monotonic() + timeout_s
        for machine in filter(None, machines):
            while time.monotonic() < deadline:
                try:
                    running = sfn.list_executions(stateMachineArn=machine, statusFilter="RUNNING")
                except Exception:  # noqa: BLE001 - set-up failed before the machine existed
                    break
                if not running["executions"]:
                    break
                time.sleep(0.05)

    def _create(self) -> None:
        from functions.apply_verdict.actions import forget_bucket_facts
        from functions.scan_object.app import reset_scanner
        from functions.shared.config import load_settings

        o = self.options
        resources.create_storage(self.client, o)
        resources.create_ingest(self.client, o, self.deployment)
        resources.create_failure_dlq(self.client, self.deployment)
        env = resources.function_env(o, self.deployment)
        self._env.set(env)
        # A warm scanner from an earlier harness keeps its clamd only if it fits.
        settings = load_settings()
        reset_scanner(lambda scanner: scanner.settings != settings)
        forget_bucket_facts()  # the buckets are new
        resources.create_functions(self.client, env, self.deployment)
        self.invoker.function_arns = self.deployment.function_arns
        resources.create_state_machine(self.client, o, self.deployment)
        self._env.set(
            {
                "STATE_MACHINE_ARN": self.state_machine_arn,
                "EXPRESS_STATE_MACHINE_ARN": self.deployment.express_state_machine_arn,
                "EXPRESS_LOG_GROUP": self.deployment.express_log_group,
            }
        )

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)

    # Names the tests and tools read.
    @property
    def queue_url(self) -> str:
        return self.deployment.queue_url

    @property
    def dlq_url(self) -> str:
        return self.deployment.dlq_url

    @property
    def state_machine_arn(self) -> str:
        return self.deployment.state_machine_arn

    @property
    def function_arns(self) -> dict[str, str]:
        return self.deployment.function_arns

    @property
    def invocations(self) -> list[str]:
        return self.invoker.invocations

    @property
    def failure_dlq_url(self) -> str:
        return self.deployment.failure_dlq_url

    # Lambda's asynchronous invocation: the first try and two retries.
    ASYNC_ATTEMPTS = 3

    def _record_failure(self, event: dict[str, Any]) -> None:
        """The status-change rule's target: the recorder, invoked as Lambda invokes it
        asynchronously; an event it failed three times goes to its DLQ."""
        if self._patches is None:
            return  # an execution that outlived its harness: nobody is listening
        for _ in range(self.ASYNC_ATTEMPTS):
            payload, is_error = self.invoker.invoke("record_failure", event)
            if not is_error:
                return
        # Lambda's on-failure destination sends with the function's own role.
        with principals.acting_as(principals.Principal(principals.FUNCTION, "record_failure")):
            self._send_to_failure_dlq(event, payload)

    def _send_to_failure_dlq(self, event: dict[str, Any], payload: str) -> None:
        self.client("sqs").send_message(
            QueueUrl=self.failure_dlq_url,
            MessageBody=json.dumps(event),
            MessageAttributes={
                "ErrorMessage": {"DataType": "String", "StringValue": payload[:1000]}
            },
        )

    def acting_as(self, function: str) -> Any:
        """A block whose AWS calls are ``function``'s (folder name), for code a test
        calls directly rather than through the handler; they are recorded and
        checked as that function's."""
        return principals.acting_as(principals.Principal(principals.FUNCTION, function))

    def fail_next(self, function: str, error: BaseException, times: int = 1) -> None:
        """Make the next ``times`` invocations of ``function`` raise ``error``.

        For faults no real component here can produce (Lambda's own service
        errors); prefer a real fault (a dead clamd, an HTTP 500) where one exists.
        """
        self.invoker.fail_next(function, error, times)

    # -- using it ---------------------------------------------------------------

    def publish_definitions(self, directory: Path) -> dict[str, Any]:
        from functions.shared.config import load_settings
        from functions.shared.definitions import publish_directory

        result = publish_directory(
            self.client("s3"),
            self.options.definitions_bucket,
            load_settings().definitions_prefix,
            directory,
            # Streamed into the emulated store: a real database is hundreds of MB.
            upload=lambda s3, bucket, key, body: seams.put_from_file(bucket, key, body).version_id,
        )
        return result.manifest

    def apply_access_gate(self) -> None:
        """The source bucket's policy with the access gate in it (stored, not enforced:
        see seams.ignore_bucket_policies), as PROTECT_SOURCE_BUCKET=true attaches it."""
        from functions.shared import access_gate
        from scanctl.harness.resources import ROLE_NAME
        from scanctl.ops import merge_gate

        role = f"arn:aws:iam::{ACCOUNT_ID}:role/{ROLE_NAME}"
        bucket = self.options.source_bucket
        statements = access_gate.statements(bucket, scanner_roles=[role], tagging_roles=[role])
        merge_gate(self.client("s3"), bucket, statements, apply=True)  # as `scanctl policy`

    def upload(
        self, key: str, body: bytes, tags: dict[str, str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        from urllib.parse import urlencode

        args: dict[str, Any] = {"Bucket": self.options.source_bucket, "Key": key, "Body": body}
        if tags:
            args["Tagging"] = urlencode(tags)
        args.update(extra)
        return self.client("s3").put_object(**args)

    def upload_file(self, key: str, path: Path, stream_above: int = 8 << 20) -> dict[str, Any]:
        """Upload a file: through the SDK when small, streamed into the store when
        large (a PutObject either way, with its notification)."""
        if path.stat().st_size <= stream_above:
            return self.upload(key, path.read_bytes())
        stored = seams.put_from_file(self.options.source_bucket, key, path)
        return {"VersionId": stored.version_id, "ETag": stored.etag}

    def drain(self, max_rounds: int = 100) -> list[str]:
        """Feed the queue to start_scan like Lambda's SQS event source does.

        Failed records (batchItemFailures) become visible again and, after
        MAX_RECEIVE_COUNT receives, SQS moves them to the DLQ. Returns the
        names of the executions the consumed records started (or found
        started: a redelivery maps to the same name), in order, once each.
        """
        start_app = self.invoker.handler_module("start_scan")
        sqs = self.client("sqs")
        names: dict[str, None] = {}  # ordered set
        # The event source mapping polls and deletes with the starter's role.
        poller = principals.Principal(principals.FUNCTION, "start_scan")
        with principals.acting_as(poller):
            # Lambda reads the queue's attributes when it creates and runs the mapping.
            principals.record(
                principals.AwsCall(
                    poller,
                    "sqs",
                    "GetQueueAttributes",
                    {"QueueUrl": self.queue_url},
                    REGION,
                    synthetic=True,
                )
            )
            self._drain(start_app, sqs, names, max_rounds)
        return list(names)

    def _drain(self, start_app: Any, sqs: Any, names: dict[str, None], max_rounds: int) -> None:
        from functions.shared.errors import InvalidInput
        from functions.shared.s3event import parse_body

        for _ in range(max_rounds):
            messages = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                break
            event = {"Records": [_sqs_record(m, self.queue_url) for m in messages]}
            response = self.invoker.call(start_app, "start_scan", event)
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            for message in messages:
                if message["MessageId"] in failed:
                    continue
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
                # The names are derived as start_scan derives them; listing every
                # execution instead would make each drain slower than the last.
                try:
                    events = parse_body(message["Body"]).created
                except InvalidInput:
                    continue
                for parsed in events:
                    if parsed.object.bucket == self.options.source_bucket:
                        names.setdefault(parsed.execution_name)

    def start(self, input_: dict[str, Any], name: str | None = None) -> str:
        name = name or f"manual-{uuid.uuid4().hex[:12]}"
        self.client("stepfunctions").start_execution(
            stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(input_)
        )
        return name

    def execution_arn(self, name: str, express: bool = False) -> str:
        machine = self.deployment.express_state_machine_arn if express else self.state_machine_arn
        return machine.replace(":stateMachine:", ":execution:") + f":{name}"

    def _find(self, sfn: Any, name: str) -> dict[str, Any]:
        """The execution of that name, on the Standard machine or else the Express one."""
        try:
            return sfn.describe_execution(executionArn=self.execution_arn(name))
        except sfn.exceptions.ExecutionDoesNotExist:
            if not self.deployment.express_state_machine_arn:
                raise
            return sfn.describe_execution(executionArn=self.execution_arn(name, express=True))

    def rescan(self, prefix: str = "", mode: str = "all", **options: Any) -> dict[str, Any]:
        """The Rescan machine's run, emulated (scanctl/harness/rescan.py): the batches go to
        the scan queue; ``drain()`` then starts their scans."""
        import datetime as dt

        import statemachines
        from scanctl.harness import rescan

        run_id = options.pop("run_id", None) or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        execution_input = statemachines.rescan_input(prefix, run_id, mode, **options)
        totals = rescan.run(
            self.client("s3"),
            self.options.source_bucket,
            execution_input,
            self.invoker.invoke,
            self.deployment.rescan_state_machine_arn,
        )
        return {"runId": run_id, **totals}

    def wait(self, names: list[str], timeout_s: float = 120.0) -> list[ExecutionReport]:
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout_s
        reports = []
        for name in names:
            described = self._find(sfn, name)
            while described["status"] == "RUNNING":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"execution {name} still running after {timeout_s}s")
                time.sleep(0.01)
                described = sfn.describe_execution(executionArn=described["executionArn"])
            if self.status_changes.matches(described["status"], described["redriveCount"]):
                # As an operator would find it: the failure (or the redrive) recorded.
                remaining = max(deadline - time.monotonic(), 1.0)
                arn = described["executionArn"]
                self.status_changes.wait_recorded(arn, described["redriveCount"], remaining)
            reports.append(read_report(sfn, described))
        return reports

    def redrive(self, name: str) -> ExecutionReport:
        """The console's Redrive, and the execution followed to its end again."""
        self.client("stepfunctions").redrive_execution(executionArn=self.execution_arn(name))
        return self.wait([name])[0]

    def scan(self, key: str, body: bytes, **upload_args: Any) -> ExecutionReport:
        """Upload one object and follow it to the end of its execution."""
        self.upload(key, body, **upload_args)
        names = self.drain()
        if len(names) != 1:
            raise AssertionError(f"expected one execution for {key}, got {names}")
        return self.wait(names)[0]

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
