"""Start Scan: S3 notifications from SQS, one Step Functions execution per object.

Each SQS record succeeds or fails on its own (partial batch response): a
throttled StartExecution or a body that is not an S3 event fails only its
record, which SQS redelivers and, after maxReceiveCount, moves to the DLQ.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.shared.aws import client
from functions.shared.config import load_settings
from functions.shared.errors import InvalidInput
from functions.shared.s3event import parse_body
from functions.start_scan.starter import start_scan

logger = Logger()
tracer = Tracer()
metrics = Metrics()
# A batch where every record failed is still a partial-failure answer, not a
# function error: the failed records return to the queue either way, and the
# function's error metrics stay about the function.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> None:
    try:
        parsed = parse_body(record.body)
    except Exception:
        logger.exception("not an S3 event notification", extra={"messageId": record.message_id})
        raise
    if parsed.ignored:
        # Not ours to scan (an ObjectRemoved the bucket's configuration sent along,
        # say): counted, and never in the way of the records beside them.
        logger.info("S3 records of other events ignored",
                    extra={"messageId": record.message_id, "events": parsed.ignored})  # fmt: skip
        metrics.add_metric(name="IgnoredRecords", unit=MetricUnit.Count, value=len(parsed.ignored))
    if not parsed.created and not parsed.invalid:
        logger.info("nothing to scan in this message", extra={"messageId": record.message_id})
        return
    settings = load_settings()
    settings.require("state_machine_arn", "STATE_MACHINE_ARN")
    source = settings.require("source_bucket", "SOURCE_BUCKET_NAME")
    _start_each(parsed.created, settings, source, record.message_id)
    if parsed.invalid:
        # The good records are started (a redelivery finds them started); the
        # message fails for the bad ones, so it reaches the DLQ, where its alarm
        # has an operator look at what sent it.
        metrics.add_metric(name="InvalidRecords", unit=MetricUnit.Count, value=len(parsed.invalid))
        raise InvalidInput(
            f"{len(parsed.invalid)} record(s) of message {record.message_id} are not S3 "
            f"notifications ({'; '.join(parsed.invalid)[:1000]}); "
            f"{len(parsed.created)} other(s) started"
        )


def _start_each(events: list[Any], settings: Any, source: str, message_id: str) -> None:
    for event in events:
        if event.object.bucket != source:
            # The queue accepts only this account's S3, but a misdirected or
            # forged message must not make us read, tag or delete elsewhere.
            logger.warning(
                "event for a bucket other than the source ignored",
                extra={"object": event.object.uri, "messageId": message_id},
            )
            metrics.add_metric(name="ForeignBucketEvents", unit=MetricUnit.Count, value=1)
            continue
        arn = settings.state_machine_for(event.object.size)
        started = start_scan(client("stepfunctions"), arn, event, message_id)
        metrics.add_metric(
            name="DuplicateEvents" if started.already_existed else "ExecutionsStarted",
            unit=MetricUnit.Count,
            value=1,
        )
        logger.info(
            "scan started",
            extra={
                "object": event.object.uri,
                "execution": started.name,
                "stateMachine": arn.rsplit(":", 1)[-1],
                "duplicate": started.already_existed,
            },
        )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
