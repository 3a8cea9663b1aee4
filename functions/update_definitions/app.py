"""Update Definitions: scheduled; freshclam, then publish to the cache."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.shared.aws import client
from functions.shared.cdn_lease import CdnLease, Holder
from functions.shared.config import load_settings
from functions.update_definitions.retroscan import retroscan
from functions.update_definitions.updater import update_definitions

logger = Logger()
tracer = Tracer()
metrics = Metrics()


def _engine_version() -> str | None:
    try:
        out = subprocess.run(
            ["clamscan", "--version"], capture_output=True, text=True, check=False, timeout=30
        ).stdout
    except OSError:
        return None
    return out.strip().removeprefix("ClamAV ").split("/", 1)[0] or None


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = load_settings()
    work = Path(settings.clamav_work_dir)
    work.mkdir(parents=True, exist_ok=True)
    lease = CdnLease(
        client("dynamodb"), settings.require("table_name", "DDB_TABLE_NAME"), Holder.UPDATER
    )
    result = update_definitions(
        client("s3"),
        settings.require("definitions_bucket", "DEFINITIONS_BUCKET_NAME"),
        settings.definitions_prefix,
        settings.freshclam,
        engine_version=_engine_version(),
        work_root=work,
        state_key=settings.freshclam_state_key,
        lease=lease,
        # The lease lasts as long as this invocation can.
        lease_seconds=context.get_remaining_time_in_millis() / 1000,
    )
    if result.cool_down_until:
        logger.warning(
            "ClamAV's CDN has the updater on cool-down: it calls nothing before then",
            extra={"result": {**result.__dict__, "status": result.status}},
        )
    else:
        logger.info(f"definitions {result.status}", extra={"result": result.__dict__})
    retro = None
    if result.published and result.version and settings.retroscan_hours:
        # What the old definitions passed recently is scanned again with the new ones.
        retro = retroscan(
            client("dynamodb"),
            client("sqs"),
            table=settings.require("table_name", "DDB_TABLE_NAME"),
            queue_url=settings.require("scan_queue_url", "SCAN_QUEUE_URL"),
            source_bucket=settings.require("source_bucket", "SOURCE_BUCKET_NAME"),
            version=result.version,
            hours=settings.retroscan_hours,
        )
        logger.info("retro-scan queued", extra=retro)
        metrics.add_metric(name="RetroScanQueued", unit=MetricUnit.Count, value=retro["queued"])
    metrics.add_metric(
        name="DefinitionsPublished", unit=MetricUnit.Count, value=int(result.published)
    )
    # The alarm DefinitionsCoolDown watches this.
    metrics.add_metric(
        name="DefinitionsCoolDown", unit=MetricUnit.Count, value=int(bool(result.cool_down_until))
    )
    metrics.add_metric(name="Signatures", unit=MetricUnit.Count, value=result.signatures)
    if result.age_hours is not None:
        metrics.add_metric(
            name="DefinitionsAgeHours", unit=MetricUnit.Count, value=result.age_hours
        )
    metrics.add_metadata(key="definitionsVersion", value=result.version)
    if result.cool_down_until:
        metrics.add_metadata(key="coolDownUntil", value=result.cool_down_until)
    return {
        "status": result.status,
        "published": result.published,
        "version": result.version,
        "signatures": result.signatures,
        "coolDownUntil": result.cool_down_until,
        "retroscan": retro,
    }
