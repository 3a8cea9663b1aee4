"""scanctl: the scanner's command line."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from scanctl import samples

console = Console(stderr=True)
# States every successful run visits: the table shows only the deciding ones.
_COMMON_STATES = {
    "Load Settings",
    "Fetch Definitions",
    "Scan Object",
    "Which Verdict?",
    "Webhook Configured?",
    "Done",
}


@click.group()
def main() -> None:
    """Run the S3 virus scanner locally, and operate a deployed one."""
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    # Powertools warns when a handler published no metric (the S3 test event).
    warnings.filterwarnings("ignore", message="No application metrics to publish")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per sample.")
def demo(as_json: bool) -> None:
    """Scan generated samples through the whole local pipeline.

    Exits 0 when every sample got the verdict it was made for.
    """
    from scanctl.harness import HarnessOptions, LocalScanner

    with tempfile.TemporaryDirectory(prefix="scanctl-demo-") as tmp:
        work = Path(tmp)
        sigs = samples.write_test_set(work / "signatures")
        made = samples.demo_samples()
        rows = []
        with LocalScanner(HarnessOptions(work_dir=work / "clamav")) as harness:
            harness.publish_definitions(sigs)
            harness.drain()
            for name, (content, _expected) in made.items():
                harness.upload(f"samples/{name}", content)
            reports = harness.wait(harness.drain())
        order = {f"samples/{name}": i for i, name in enumerate(made)}
        reports.sort(key=lambda r: order[r.input["object"]["key"]])
        for report in reports:
            key = report.input["object"]["key"]
            expected = made[key.removeprefix("samples/")][1]
            scan = report.output.get("scan", {})
            rows.append(
                {
                    "key": key,
                    "expected": expected,
                    "verdict": scan.get("verdict", "error"),
                    "reason": scan.get("reason"),
                    "signatures": scan.get("signatures", []),
                    "action": report.output.get("action", {}).get("action", "none"),
                    "status": report.status,
                    "states": report.states,
                }
            )
    ok = all(r["verdict"] == r["expected"] for r in rows)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
    else:
        table = Table(title="Local scan (emulated AWS, real ClamAV, test signatures)")
        for column in ("key", "expected", "verdict", "action", "signature / reason", "path"):
            table.add_column(column)
        for r in rows:
            mark = "" if r["verdict"] == r["expected"] else " ✗"
            detail = ", ".join(r["signatures"]) or (r["reason"] or "")
            path = " → ".join(s for s in r["states"] if s not in _COMMON_STATES)
            table.add_row(r["key"], r["expected"], r["verdict"] + mark, r["action"], detail, path)
        Console().print(table)
        console.print("all samples got the verdict they were made for" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)
