"""How many bytes of CloudWatch Logs one Express scan writes (level ALL, execution data).

Express keeps no history in Step Functions: what the console shows of an
Express execution is read from the log group, and log ingestion is billed per
GB. This runs real scans on the real Express definition (the local harness,
real clamd), takes each execution's events and writes them as the log lines
Step Functions delivers (``id``, ``type``, ``details`` with the state's input
or output, ``previous_event_id``, ``event_timestamp``, ``execution_arn``,
``redrive_count``), plus CloudWatch's 26 bytes of metering per event.

    .venv/bin/python -m bench.express_logs            # table
    .venv/bin/python -m bench.express_logs --json     # what bench/cost.py reads

Where it differs from AWS: the events are moto's, whose details follow the
API's shapes; an Express execution ARN is ``...:express:<machine>:<name>:<uuid>``
(here: a machine name of the length CDK generates).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLOUDWATCH_EVENT_OVERHEAD = 26  # bytes CloudWatch Logs meters per event beside its message
# What CDK names the Express machine: <construct path><hash>-<suffix>, about 45 characters.
MACHINE_NAME = "WorkflowExpressStateMachine1A2B3C4D-AbCdEfGhIjKl"
CASES = {
    "clean, 1 MB": ("clean.bin", b"\0" * (1024 * 1024)),
    "infected (EICAR)": ("eicar.com", None),
}


DATA_FIELDS = {"input", "output", "inputDetails", "outputDetails", "parameters"}


def log_lines(
    history: list[dict[str, Any]], express_arn: str, execution_data: bool = True
) -> list[str]:
    """The events as Step Functions writes them to CloudWatch Logs (without execution
    data: the same events, their inputs, outputs and parameters left out)."""
    lines = []
    for event in history:
        details = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
        if not execution_data:
            details = {k: v for k, v in details.items() if k not in DATA_FIELDS}
        lines.append(
            json.dumps(
                {
                    "id": str(event["id"]),
                    "type": event["type"],
                    "details": details,
                    "previous_event_id": str(event.get("previousEventId", 0)),
                    "event_timestamp": str(int(event["timestamp"].timestamp() * 1000)),
                    "execution_arn": express_arn,
                    "redrive_count": "0",
                },
                separators=(",", ":"),
                default=str,
            )
        )
    return lines


def measure(work: Path) -> dict[str, Any]:
    """Without a webhook: the deployment bench/cost.py prices first."""
    from scanctl import samples
    from scanctl.harness import HarnessOptions, LocalScanner
    from scanctl.harness.resources import EXPRESS_STATE_MACHINE_NAME

    definitions = samples.write_test_set(work / "signatures")
    options = HarnessOptions(
        work_dir=work / "clamav",
        workflow_type="EXPRESS",
        express_max_object_mb=256,
    )
    out: dict[str, Any] = {}
    with LocalScanner(options) as harness:
        harness.publish_definitions(definitions)
        harness.drain()
        sfn = harness.client("stepfunctions")
        for label, (key, body) in CASES.items():
            report = harness.scan(key, body if body is not None else samples.EICAR)
            events = sfn.get_execution_history(executionArn=report.arn, maxResults=1000)["events"]
            arn = (
                report.arn.replace(":execution:", ":express:").rsplit(":", 2)[0]
                + f":{report.name}:{uuid.uuid4()}:{uuid.uuid4()}"
            ).replace(f":{EXPRESS_STATE_MACHINE_NAME}:", f":{MACHINE_NAME}:")
            out[label] = {"events": len(events), "states": report.states}
            for data in (True, False):
                lines = log_lines(events, arn, execution_data=data)
                out[label]["bytes" if data else "bytes_without_execution_data"] = sum(
                    len(line.encode()) + CLOUDWATCH_EVENT_OVERHEAD for line in lines
                )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="express-logs-") as tmp:
        result = measure(Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("| case | log events | bytes (execution data) | bytes (without) |")
    print("|---|---:|---:|---:|")
    for label, row in result.items():
        print(
            f"| {label} | {row['events']} | {row['bytes']:,} | "
            f"{row['bytes_without_execution_data']:,} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
