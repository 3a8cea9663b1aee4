"""Scan Object: scan the exact object version with the warm clamd."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.scan_object.scanner import Scanner
from functions.shared.aws import client
from functions.shared.config import load_settings
from functions.shared.contracts import DefinitionsRef, ObjectRef

logger = Logger()
tracer = Tracer()
metrics = Metrics()

# One scanner, and so one clamd, per container: warm invocations reuse it.
_scanner: Scanner | None = None
_scanner_lock = threading.Lock()


def get_scanner() -> Scanner:
    global _scanner
    with _scanner_lock:
        if _scanner is None:
            _scanner = Scanner(client("s3"), load_settings())
        return _scanner


def reset_scanner(when: Callable[[Scanner], bool] = lambda scanner: True) -> None:
    """Drop the warm scanner (stopping its clamd) if ``when`` says it no longer fits.

    Lambda never needs this (a container's settings do not change); local runs
    and tests that change the settings between harnesses do.
    """
    global _scanner
    with _scanner_lock:
        if _scanner is not None and when(_scanner):
            _scanner.engine.stop()
            _scanner = None


def _warm_up() -> None:
    """Load the current definitions while Lambda is still initialising us.

    Runs in a thread so init never blocks on a database load (Lambda's init
    phase is limited to 10 s); the first invocation waits for it only if it
    needs the engine before the load is done.
    """
    try:
        version = get_scanner().warm_up()
        logger.info("engine warmed up", extra={"definitionsVersion": version})
    except Exception:
        logger.warning("warm-up failed; the first scan will load definitions", exc_info=True)


def _not_init_noise(record: logging.LogRecord) -> bool:
    return "still initializing" not in record.getMessage()


if os.environ.get("DEFINITIONS_BUCKET_NAME"):
    # Lambda may initialise a container before any request comes (proactive
    # init): the warm-up's S3 calls then belong to no trace, and the X-Ray SDK
    # would warn once for each (the manifest and every range of the tarball).
    # Only that warning goes; the SDK's others stay.
    logging.getLogger("aws_xray_sdk.core.lambda_launcher").addFilter(_not_init_noise)
    threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    obj = ObjectRef.from_dict(event.get("object"))
    definitions = DefinitionsRef.from_dict(event.get("definitions"))
    result = get_scanner().scan(obj, definitions)
    logger.info("scanned", extra={"object": obj.uri, "scan": result.to_dict()})
    metrics.add_metric(name=f"Verdict_{result.verdict}", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="ScanDuration", unit=MetricUnit.Milliseconds, value=result.duration_ms)
    if result.definitions_stale:
        metrics.add_metric(name="StaleDefinitionsUsed", unit=MetricUnit.Count, value=1)
    return result.to_dict()
