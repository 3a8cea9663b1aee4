"""`scanctl local serve`: the emulated AWS on 127.0.0.1, scanning what is uploaded."""

from __future__ import annotations

import time
from pathlib import Path

import click

from scanctl.harness import HarnessOptions, LocalScanner
from scanctl.local import DefinitionsChoice


def serve(
    port: int,
    definitions: DefinitionsChoice,
    work: Path,
    *,
    quarantine: bool = True,
    webhook_url: str | None = None,
    poll_s: float = 0.5,
    max_seconds: float | None = None,
) -> None:
    """Run until Ctrl-C (or ``max_seconds``), printing one line per result."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

    options = HarnessOptions(
        work_dir=work / "clamav", quarantine=quarantine, webhook_url=webhook_url
    )
    with LocalScanner(options) as harness:
        harness.publish_definitions(definitions.directory)
        harness.drain()
        # The server shares moto's in-process backends with the harness: an upload
        # through it lands in the same bucket, whose notification feeds our queue.
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        click.echo(f"definitions: {definitions.description}", err=True)
        click.echo(
            f"emulated AWS on {endpoint}; upload with:\n"
            f"  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "
            f"aws --endpoint-url {endpoint} s3 cp FILE s3://{options.source_bucket}/\n"
            f"Ctrl-C to stop.",
            err=True,
        )
        started = time.monotonic()
        try:
            while max_seconds is None or time.monotonic() - started < max_seconds:
                names = harness.drain()
                for report in harness.wait(names):
                    obj = report.input.get("object", {})
                    scan = report.output.get("scan") or {}
                    action = (report.output.get("action") or {}).get("action", "none")
                    detail = ", ".join(scan.get("signatures") or []) or scan.get("reason") or ""
                    verdict = (
                        scan.get("verdict", "error")
                        if report.status == "SUCCEEDED"
                        else (f"error ({report.error})")
                    )
                    where = f"s3://{obj.get('bucket')}/{obj.get('key')}"
                    click.echo(f"{where}: {verdict} {action} {detail}".rstrip())
                time.sleep(poll_s)
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
        finally:
            server.stop()
