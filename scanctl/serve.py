"""`scanctl local serve`: the emulated AWS on 127.0.0.1, scanning what is uploaded."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import click

from scanctl.harness import HarnessOptions, LocalScanner, read_report
from scanctl.harness.environment import BASE_ENV, REGION
from scanctl.local import DefinitionsChoice, check_stop

# The functions' own logs (JSON lines) would drown the one line per result.
QUIET_FUNCTIONS = {"POWERTOOLS_LOG_LEVEL": "CRITICAL"}


class PortInUse(Exception):
    """Something already listens on the port."""


def check_port(port: int) -> None:
    """Fail now, in a sentence, rather than after the emulator is up (or never)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {port} on 127.0.0.1 is in use; choose another with --port"
                ) from err
            raise PortInUse(f"cannot listen on 127.0.0.1:{port}: {err.strerror}") from err


def describe(harness: LocalScanner, endpoint: str) -> dict[str, Any]:
    o = harness.options
    return {
        "endpoint": endpoint,
        "region": REGION,
        "bucket": o.source_bucket,
        "quarantineBucket": o.quarantine_bucket if o.quarantine else None,
        "auditTable": o.table_name,
        "stateMachineArn": harness.state_machine_arn,
        "scanQueueUrl": harness.queue_url,
        "credentials": {k: BASE_ENV[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
    }


def result_line(report: Any) -> str:
    """One line per ended execution: what, how it ended, and why it ran."""
    obj = report.input.get("object", {})
    where = f"s3://{obj.get('bucket')}/{obj.get('key')}"
    trigger = (report.input.get("trigger") or {}).get("source")
    why = " (redrive)" if report.redrive_count else (" (rescan)" if trigger == "rescan" else "")
    if report.status != "SUCCEEDED":
        state = report.failed_state or "?"
        return f"{where}: error {report.error or report.status} at {state}{why}"
    scan = report.output.get("scan") or {}
    action = (report.output.get("action") or {}).get("action", "none")
    detail = ", ".join(scan.get("signatures") or []) or scan.get("reason") or ""
    return f"{where}: {scan.get('verdict', 'error')} {action} {detail}".rstrip() + why


def serve(
    port: int,
    definitions: DefinitionsChoice,
    work: Path,
    *,
    quarantine: bool = True,
    webhook_url: str | None = None,
    poll_s: float = 0.5,
    max_seconds: float | None = None,
    as_json: bool = False,
) -> None:
    """Run until Ctrl-C (or ``max_seconds``), printing one line per ended execution:
    uploads, rescans and redrives alike."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    logging.getLogger("moto").setLevel(logging.CRITICAL)  # failures: our one line
    options = HarnessOptions(
        work_dir=work / "clamav",
        quarantine=quarantine,
        webhook_url=webhook_url,
        extra_env=QUIET_FUNCTIONS,
    )
    with LocalScanner(options) as harness:
        harness.publish_definitions(definitions.directory)
        harness.drain()
        # The server shares moto's in-process backends with the harness: an upload
        # through it lands in the same bucket, whose notification feeds our queue.
        check_port(port)  # still free after the set-up?
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            facts = describe(harness, endpoint)
            click.echo(f"definitions: {definitions.description}", err=True)
            if as_json:
                click.echo(json.dumps(facts))
            else:
                for label, value in facts.items():
                    if label != "credentials":
                        click.echo(f"{label}: {value}", err=True)
                click.echo(
                    "upload with:\n  "
                    + " ".join(f"{k}={v}" for k, v in facts["credentials"].items())
                    + f" aws --endpoint-url {endpoint} --region {REGION} "
                    f"s3 cp FILE s3://{options.source_bucket}/\n"
                    "Ctrl-C to stop.",
                    err=True,
                )
            _follow(harness, poll_s, max_seconds)
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
        finally:
            server.stop()
            harness.abandon()


def _follow(harness: LocalScanner, poll_s: float, max_seconds: float | None) -> None:
    """Report every execution once it ends (and again after each redrive ends)."""
    sfn = harness.client("stepfunctions")
    reported: set[tuple[str, str]] = set()
    started = time.monotonic()
    while max_seconds is None or time.monotonic() - started < max_seconds:
        check_stop()  # a Ctrl-C the emulator swallowed still stops the server
        with contextlib.suppress(Exception):  # a bad upload never stops the server
            harness.drain()
        for machine in filter(None, harness.machines()):
            for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=machine):
                for summary in page["executions"]:
                    if summary["status"] == "RUNNING":
                        continue
                    # A redrive ends the same execution again, later.
                    seen = (summary["executionArn"], str(summary.get("stopDate")))
                    if seen in reported:
                        continue
                    reported.add(seen)
                    described = sfn.describe_execution(executionArn=summary["executionArn"])
                    click.echo(result_line(read_report(sfn, described)))
        time.sleep(poll_s)
