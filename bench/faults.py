"""`make faults`: a fault campaign through the local pipeline, then a reconciliation.

N objects (clean, EICAR, nested zip, encrypted zip, too large) go through the
whole local pipeline (moto, the real ASL, the real handlers, real clamd) while
faults are injected in every step, each object drawing its own plan:

- ``none``;
- ``transient``: every step fails its first one or two attempts (each with the
  named error its code raises, or Lambda's throttling): the retries must ride
  them out;
- a persistent fault in one step, until the faults are switched off:
  ``engine-down`` (Scan Object), ``lambda-throttled`` (Scan Object),
  ``s3-slowdown`` (S3 answers SlowDown to the object's tag, copy and delete),
  ``ddb-throttled`` (DynamoDB refuses Record Audit's write), ``webhook-5xx``,
  ``webhook-timeout``, ``ingest-throttled`` (Step Functions refuses
  StartExecution, so the notification ends in the scan queue's DLQ);
- ``deleted``: the object is deleted before its scan.

Then every object must be exactly one of: the audit item of a SUCCEEDED
execution, a FAILED execution whose failure the audit records, or a message
in a DLQ; the counts add up to N. With the faults off, one ``scanctl
redrive`` must bring every FAILED execution to SUCCEEDED, same ARN, with the
verdict its object was made for.

    .venv/bin/python -m bench.faults --objects 1000        # make faults
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scanctl import samples  # noqa: E402

KINDS = ("clean", "eicar", "nested", "encrypted", "too-large")
EXPECTED = {
    "clean": "clean",
    "eicar": "infected",
    "nested": "infected",
    "encrypted": "unscannable",
    "too-large": "unscannable",
}
PERSISTENT = (
    "engine-down",
    "lambda-throttled",
    "s3-slowdown",
    "ddb-throttled",
    "webhook-5xx",
    "webhook-timeout",
    "ingest-throttled",
)
# The named error each step's code raises when its dependency falters.
TRANSIENT_ERRORS = {
    "fetch_definitions": "DefinitionsUnavailable",
    "scan_object": "ScanEngineUnavailable",
    "apply_verdict": "ObjectStoreUnavailable",
    "record_audit": "AuditWriteFailed",
    "notify_webhook": "WebhookDeliveryFailed",
}
WEBHOOK_TIMEOUT_S = 0.2
MAX_OBJECT_MB = 1


@dataclass
class Plan:
    key: str
    kind: str
    fault: str  # none, transient, deleted, or one of PERSISTENT
    transient_steps: dict[str, int] = field(default_factory=dict)  # function -> failures
    version_id: str | None = None
    name: str | None = None


def content(kind: str, index: int) -> bytes:
    if kind == "clean":
        return f"quarterly report {index}\n".encode() * 20
    if kind == "eicar":
        return samples.EICAR
    if kind == "nested":
        return samples.zipped("inner.zip", samples.zipped("eicar.com", samples.EICAR))
    if kind == "encrypted":
        return samples.encrypted_zip("secret.txt", f"secret {index}\n".encode())
    return b"\0" * (MAX_OBJECT_MB * 1024 * 1024 + 1)


def make_plans(count: int, seed: int) -> list[Plan]:
    rng = random.Random(seed)
    plans = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        roll = rng.random()
        if roll < 0.35:
            fault = "none"
        elif roll < 0.65:
            fault = "transient"
        elif roll < 0.70:
            fault = "deleted"
        else:
            fault = rng.choice(PERSISTENT)
        plan = Plan(key=f"campaign/{i:05d}-{kind}", kind=kind, fault=fault)
        if fault == "transient":
            steps = rng.sample(sorted(TRANSIENT_ERRORS), k=rng.randint(1, 3))
            plan.transient_steps = {step: rng.randint(1, 2) for step in steps}
        plans.append(plan)
    return plans


def _named(name: str) -> BaseException:
    """An exception whose class name is ``name``: what Step Functions routes on."""
    return type(name, (Exception,), {})(f"injected: {name}")


class Chaos:
    """Decides every fault from the plans; ``on`` switches all of them."""

    def __init__(self, plans: list[Plan]) -> None:
        self.on = True
        self.by_key = {p.key: p for p in plans}
        self.by_name: dict[str, Plan] = {}
        self.attempts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.injected: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def plan_for(self, function: str, event: Any) -> Plan | None:
        if not isinstance(event, dict):
            return None
        obj = event.get("object") or (event.get("state") or {}).get("object")
        if isinstance(obj, dict) and obj.get("key") in self.by_key:
            return self.by_key[obj["key"]]
        return self.by_name.get(str(event.get("requestedBy")))

    def invoke(self, function: str, event: Any) -> BaseException | None:
        """The Lambda-level faults: raised instead of running the handler."""
        plan = self.plan_for(function, event)
        if not self.on or plan is None:
            return None
        if plan.fault == "engine-down" and function == "scan_object":
            return self._count("engine-down", _named("ScanEngineUnavailable"))
        if plan.fault == "lambda-throttled" and function == "scan_object":
            return self._count("lambda-throttled", _named("Lambda.TooManyRequestsException"))
        failures = plan.transient_steps.get(function, 0)
        if failures:
            with self._lock:
                self.attempts[(plan.key, function)] += 1
                attempt = self.attempts[(plan.key, function)]
            if attempt <= failures:
                error = (
                    TRANSIENT_ERRORS[function]
                    if attempt == 1
                    else "Lambda.TooManyRequestsException"
                )
                return self._count("transient", _named(error))
        return None

    def _count(self, what: str, error: BaseException) -> BaseException:
        with self._lock:
            self.injected[what] += 1
        return error

    def aws_fault(self, operation: str, params: dict[str, Any]) -> str | None:
        """The AWS-level faults: the error code S3, DynamoDB or Step Functions answers."""
        if not self.on:
            return None
        if operation in ("CopyObject", "DeleteObject", "PutObjectTagging"):
            plan = self.by_key.get(params.get("Key", ""))
            if (
                plan
                and plan.fault == "s3-slowdown"
                and params.get("Bucket") != "scanner-definitions"
            ):
                self._count("s3-slowdown", Exception())
                return "SlowDown"
        if operation == "PutItem" and "ConditionExpression" not in params:
            key = params.get("Item", {}).get("key", {}).get("S", "")
            plan = self.by_key.get(key)
            if plan and plan.fault == "ddb-throttled":
                self._count("ddb-throttled", Exception())
                return "ProvisionedThroughputExceededException"
        if operation == "StartExecution":
            plan = self.by_name.get(params.get("name", ""))
            if plan and plan.fault == "ingest-throttled":
                self._count("ingest-throttled", Exception())
                return "ThrottlingException"
        return None

    def webhook(self, body: dict[str, Any]) -> tuple[int, float]:
        """(status, delay) for one delivery."""
        plan = self.by_key.get((body.get("object") or {}).get("key", ""))
        if self.on and plan is not None:
            if plan.fault == "webhook-5xx":
                self._count("webhook-5xx", Exception())
                return 503, 0.0
            if plan.fault == "webhook-timeout":
                self._count("webhook-timeout", Exception())
                return 200, WEBHOOK_TIMEOUT_S * 2
        return 200, 0.0


@contextmanager
def receiver(chaos: Chaos) -> Iterator[str]:
    """A webhook receiver on 127.0.0.1 that answers as the plans say."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            status, delay = chaos.webhook(body)
            if delay:
                time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def aws_faults(chaos: Chaos) -> Iterator[None]:
    """Hooks on the handlers' own boto3 clients, answering as AWS would."""
    from botocore.exceptions import ClientError

    from functions.shared import aws

    registered = []
    for service, operations in {
        "s3": ("CopyObject", "DeleteObject", "PutObjectTagging"),
        "dynamodb": ("PutItem",),
        "stepfunctions": ("StartExecution",),
    }.items():
        client = aws.client(service)
        for operation in operations:

            def hook(params: dict, _op: str = operation, **_: Any) -> None:
                code = chaos.aws_fault(_op, params)
                if code:
                    raise ClientError({"Error": {"Code": code, "Message": "injected"}}, _op)

            event = f"provide-client-params.{service}.{operation}"
            client.meta.events.register(event, hook)
            registered.append((client, event, hook))
    try:
        yield
    finally:
        for client, event, hook in registered:
            client.meta.events.unregister(event, hook)


# -- reconciliation -----------------------------------------------------------------------


SUCCEEDED, FAILED_RECORDED, IN_DLQ, LOST = (
    "succeeded, audited",
    "failed, recorded",
    "in a DLQ",
    "LOST",
)


def _dlq_keys(harness: Any) -> tuple[set[str], set[str]]:
    """Object keys whose notification sits in the scan DLQ; execution ARNs in the failure DLQ."""
    from functions.shared.s3event import parse_body

    sqs = harness.client("sqs")
    keys, arns = set(), set()
    for url, into in ((harness.dlq_url, keys), (harness.failure_dlq_url, arns)):
        while True:
            messages = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=3600
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                if url == harness.dlq_url:
                    into.update(e.object.key for e in parse_body(message["Body"]))
                else:
                    into.add(json.loads(message["Body"])["detail"]["executionArn"])
    return keys, arns


def classify(harness: Any, plans: list[Plan]) -> dict[str, dict[str, Any]]:
    """Every object's outcome, checked to be exactly one."""
    sfn = harness.client("stepfunctions")
    dlq_keys, dlq_arns = _dlq_keys(harness)
    outcomes = {}
    for plan in plans:
        execution = None
        if plan.name:
            try:
                execution = sfn.describe_execution(executionArn=harness.execution_arn(plan.name))
            except sfn.exceptions.ExecutionDoesNotExist:
                execution = None
        items = [i for i in harness.audit_items(plan.key) if i.get("executionName") == plan.name]
        item = items[0] if items else None
        found = []
        if execution and execution["status"] == "SUCCEEDED" and item and not item.get("failed"):
            found.append(SUCCEEDED)
        if execution and execution["status"] == "FAILED" and item and item.get("failed"):
            found.append(FAILED_RECORDED)
        if plan.key in dlq_keys:
            found.append(IN_DLQ)  # its notification started nothing
        elif execution and execution["executionArn"] in dlq_arns and not item:
            found.append(IN_DLQ)  # its failure could not be recorded
        # (A failure recorded whose object could not be marked is also in the
        # recorder's DLQ, for the alarm; it counts as recorded.)
        outcomes[plan.key] = {
            "outcome": found[0] if len(found) == 1 else LOST,
            "all": found,
            "status": execution["status"] if execution else None,
            "arn": execution["executionArn"] if execution else None,
            "verdict": item.get("verdict") if item else None,
            "failedState": item.get("failedState") if item else None,
        }
    return outcomes


def expected_verdict(plan: Plan) -> str:
    return "skipped" if plan.fault == "deleted" else EXPECTED[plan.kind]


# -- the campaign -------------------------------------------------------------------------


def campaign(count: int, seed: int, work: Path, definitions: Path) -> dict[str, Any]:
    from functions.shared.contracts import ObjectRef
    from functions.shared.naming import execution_name
    from scanctl.harness import HarnessOptions, LocalScanner
    from scanctl.ops import redrive

    plans = make_plans(count, seed)
    chaos = Chaos(plans)
    started = time.monotonic()
    with receiver(chaos) as url:
        options = HarnessOptions(
            work_dir=work / "clamav",
            webhook_url=url,
            max_object_size_mb=MAX_OBJECT_MB,
            extra_env={"WEBHOOK_TIMEOUT_SECONDS": str(WEBHOOK_TIMEOUT_S)},
        )
        with LocalScanner(options) as harness, aws_faults(chaos):
            harness.publish_definitions(definitions)
            harness.drain()  # S3's test event
            harness.invoker.chaos = chaos.invoke
            s3 = harness.client("s3")
            for i, plan in enumerate(plans):
                plan.version_id = harness.upload(plan.key, content(plan.kind, i))["VersionId"]
                plan.name = execution_name(
                    ObjectRef("uploads", plan.key, version_id=plan.version_id)
                )
                chaos.by_name[plan.name] = plan
                if plan.fault == "deleted":
                    s3.delete_object(Bucket="uploads", Key=plan.key, VersionId=plan.version_id)
            names = harness.drain(max_rounds=10 * count)
            harness.wait(names, timeout_s=600 + count)
            first = classify(harness, plans)
            first_pass_s = time.monotonic() - started

            # The faults are fixed; one redrive, as an operator would run it.
            chaos.on = False
            failed = {k for k, o in first.items() if o["outcome"] == FAILED_RECORDED}
            summary = redrive(
                harness.client("stepfunctions"), harness.state_machine_arn, dt.timedelta(hours=1)
            )
            by_key = {p.key: p for p in plans}
            harness.wait([by_key[k].name for k in sorted(failed)], timeout_s=600 + count)
            second = classify(harness, plans)

    rows = collections.Counter((by_key[k].fault, o["outcome"]) for k, o in first.items())
    wrong = [
        k
        for k, o in second.items()
        if o["outcome"] == SUCCEEDED and o["verdict"] != expected_verdict(by_key[k])
    ]
    recovered = [
        k
        for k in failed
        if second[k]["outcome"] == SUCCEEDED
        and second[k]["arn"] == first[k]["arn"]
        and second[k]["verdict"] == expected_verdict(by_key[k])
    ]
    return {
        "objects": count,
        "seed": seed,
        "first": {
            outcome: sum(1 for o in first.values() if o["outcome"] == outcome)
            for outcome in (SUCCEEDED, FAILED_RECORDED, IN_DLQ, LOST)
        },
        "by_fault": {f"{fault} / {outcome}": n for (fault, outcome), n in sorted(rows.items())},
        "injected": dict(chaos.injected),
        "redriven": len(summary.redriven),
        "not_redrivable": summary.not_redrivable,
        "failed_then_recovered": f"{len(recovered)}/{len(failed)}",
        "recovered": len(recovered),
        "failed": len(failed),
        "wrong_verdicts": wrong,
        "lost": [k for k, o in first.items() if o["outcome"] == LOST],
        "first_pass_s": round(first_pass_s, 1),
        "outcomes": first,
        "after_redrive": second,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"Fault campaign: {result['objects']} objects, seed {result['seed']}, "
        f"first pass {result['first_pass_s']} s",
        "",
        "| outcome after the faults | objects |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v} |" for k, v in result["first"].items()]
    lines += [f"| **total** | **{sum(result['first'].values())}** |", ""]
    lines += ["| fault / outcome | objects |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in result["by_fault"].items()]
    lines += ["", "| faults injected | times |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(result["injected"].items())]
    lines += [
        "",
        f"After one `scanctl redrive` with the faults off: {result['failed_then_recovered']} "
        f"FAILED executions SUCCEEDED with the same ARN and the right verdict "
        f"({result['redriven']} redriven, {len(result['not_redrivable'])} not redrivable); "
        f"wrong verdicts: {len(result['wrong_verdicts'])}; lost: {len(result['lost'])}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path, help="Also write the full result here.")
    args = parser.parse_args(argv)
    if args.objects < 1:
        parser.error("--objects must be at least 1")
    import logging

    # The injected faults make moto's interpreter log every failed task: the
    # table says what happened.
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        work = Path(tmp)
        definitions = samples.write_test_set(work / "signatures")
        result = campaign(args.objects, args.seed, work, definitions)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    ok = (
        not result["lost"]
        and not result["wrong_verdicts"]
        and result["recovered"] == result["failed"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
