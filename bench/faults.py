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
- ``deleted``: the object is deleted before its scan;
- ``webhook-4xx``: the webhook refuses the notice (not retried);
- ``crash-after-copy`` / ``crash-after-delete``: Apply Verdict dies once
  between the copy and the delete, or after the delete before it answers
  (Lambda's retry must finish the quarantine, or recognise it as done).

Beside the plans, a quarter of the objects are uploaded with a forged
``scan-status=clean``, and some status-change events are lost (EventBridge is
best effort): the scheduled reconciliation must catch them up.

Then every object must be exactly one of: the audit item of a SUCCEEDED
execution, a FAILED execution whose failure the audit records, or a message
in a DLQ; the counts add up to N. And every object is judged by what S3
holds, not by our bookkeeping: while the faults last, no version that is not
clean is tagged ``clean``; at the end, with the faults off, the operator's
reconciliation, one ``scanctl redrive``, the scan DLQ sent back to the queue
and ``scanctl replay-failures``, every infected version is gone from the
bucket with its copy in quarantine, every other one carries the status it was
made for (ours, never the forged one), and the newest audit item of the
version says the same. Whatever disagrees is ``wrongly_marked``.

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
    "webhook-4xx",
    "ingest-throttled",
    "crash-after-copy",
    "crash-after-delete",
)
FORGED = {"scan-status": "clean", "scan-reason": "forged"}
# Status-change events EventBridge loses in a campaign (one in this many objects).
LOST_EVENTS_EVERY = 25
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
    forged: bool = False


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


CRASHES = ("crash-after-copy", "crash-after-delete")
INFECTED_KINDS = ("eicar", "nested")


def make_plans(count: int, seed: int) -> list[Plan]:
    """Each object's fault. The persistent ones go round in turn (so a small campaign
    still fires each); the crashes go to infected objects, the only ones copied
    and deleted, every other infected object with a persistent fault."""
    rng = random.Random(seed)
    others = [f for f in PERSISTENT if f not in CRASHES]
    plans, turn, infected = [], 0, 0
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
            infected += kind in INFECTED_KINDS
            if kind in INFECTED_KINDS and infected % 2:
                fault = CRASHES[(infected // 2) % len(CRASHES)]
            else:
                fault, turn = others[turn % len(others)], turn + 1
        plan = Plan(key=f"campaign/{i:05d}-{kind}", kind=kind, fault=fault, forged=i % 4 == 3)
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

    def crash(self, operation: str, params: dict[str, Any]) -> BaseException | None:
        """Apply Verdict dying right after a copy or a delete landed (once per object)."""
        plan = self.by_key.get(params.get("Key", ""))
        if not self.on or plan is None:
            return None
        wanted = {"CopyObject": "crash-after-copy", "DeleteObject": "crash-after-delete"}
        if plan.fault != wanted.get(operation):
            return None
        with self._lock:
            self.attempts[(plan.key, operation)] += 1
            if self.attempts[(plan.key, operation)] > 1:
                return None
        return self._count(plan.fault, _named("Lambda.ServiceException"))

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
            if plan.fault == "webhook-4xx" and body.get("event") == "scan.completed":
                self._count("webhook-4xx", Exception())
                return 410, 0.0
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
    # Dying mid-step: the copy (or the delete) landed, then the function is gone.
    s3 = aws.client("s3")
    for operation in ("CopyObject", "DeleteObject"):

        def died(params: dict, _op: str = operation, **_: Any) -> None:
            crash = chaos.crash(_op, params.get("_chaos_params") or {})
            if crash is not None:
                raise crash

        def remember(params: dict, context: dict, **_: Any) -> None:
            context["_chaos_params"] = dict(params)

        def after(context: dict, _died: Any = died, **_: Any) -> None:
            _died({"_chaos_params": context.get("_chaos_params")})

        for event, handler in (
            (f"provide-client-params.s3.{operation}", remember),
            (f"after-call.s3.{operation}", after),
        ):
            s3.meta.events.register(event, handler)
            registered.append((s3, event, handler))
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
        peeked = []
        while True:
            messages = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=3600
            ).get("Messages", [])
            if not messages:
                break
            for message in messages:
                peeked.append(message["ReceiptHandle"])
                if url == harness.dlq_url:
                    into.update(e.object.key for e in parse_body(message["Body"]).created)
                else:
                    body = json.loads(message["Body"])
                    arn = (body.get("detail") or {}).get("executionArn") or (
                        body.get("execution") or {}
                    ).get("id")
                    into.add(str(arn))
        for receipt in peeked:  # looked at, not taken: the replay reads them again
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=receipt, VisibilityTimeout=0)
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


@dataclass
class Seen:
    """One object version as S3 and the audit table hold it."""

    in_bucket: bool
    tags: dict[str, str]
    quarantined: bool
    audit_verdict: str | None


def seen(harness: Any, plan: Plan) -> Seen:
    s3 = harness.client("s3")
    listed = s3.list_object_versions(Bucket="uploads", Prefix=plan.key).get("Versions", [])
    in_bucket = any(v["Key"] == plan.key and v["VersionId"] == plan.version_id for v in listed)
    tags = harness.tags(plan.key, version_id=plan.version_id) if in_bucket else {}
    copies = s3.list_object_versions(Bucket="quarantine", Prefix=plan.key).get("Versions", [])
    quarantined = False
    for copy in copies:
        if copy["Key"] != plan.key:
            continue
        tag_set = s3.get_object_tagging(
            Bucket="quarantine", Key=plan.key, VersionId=copy["VersionId"]
        )["TagSet"]
        if {t["Key"]: t["Value"] for t in tag_set}.get("scan-source-version") == plan.version_id:
            quarantined = True
    items = [
        i
        for i in harness.audit_items(plan.key)
        if i.get("versionId") == plan.version_id and i.get("verdict") != "released"
    ]
    return Seen(in_bucket, tags, quarantined, items[-1].get("verdict") if items else None)


def misjudged_during(plan: Plan, now: Seen) -> str | None:
    """While faults last: a version that is not clean is never tagged clean by us,
    and a forged clean never outlives a finished or failed scan of it.

    Not for ``s3-slowdown``: S3 refuses every write to that object, the tag that
    would replace a forged one included, until the fault ends (the recorder's
    DLQ and its alarm hold it meanwhile); it is judged at the end.
    """
    if plan.fault == "s3-slowdown":
        return None
    if now.in_bucket and now.tags.get("scan-status") == "clean" and now.audit_verdict:
        if expected_verdict(plan) != "clean":
            return f"tagged clean while it is {expected_verdict(plan)}"
        if now.tags.get("scan-reason") == "forged":
            return "the forged clean outlived its scan"
    return None


def misjudged_at_end(plan: Plan, end: Seen) -> str | None:
    """Once the faults are gone and the operator has reconciled: the object is what
    it was made to be, in S3 and in the audit table."""
    want = expected_verdict(plan)
    if want == "skipped":
        return "the deleted version is back" if end.in_bucket else None
    if want == "infected":
        if end.in_bucket:
            return f"infected version still in the bucket, tagged {end.tags.get('scan-status')}"
        if not end.quarantined:
            return "infected version deleted without its quarantine copy"
    else:
        if not end.in_bucket:
            return f"{want} version gone from the bucket"
        if end.tags.get("scan-status") != want:
            return f"tagged {end.tags.get('scan-status')!r}, not {want}"
        if end.tags.get("scan-reason") == "forged" or "scan-time" not in end.tags:
            return "its status tag is not ours"
    if end.audit_verdict != want:
        return f"audit says {end.audit_verdict}, not {want}"
    return None


def replay_scan_dlq(harness: Any) -> int:
    """The scan DLQ sent back to the scan queue (what SQS's DLQ redrive does)."""
    sqs = harness.client("sqs")
    moved = 0
    while True:
        messages = sqs.receive_message(
            QueueUrl=harness.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60
        ).get("Messages", [])
        if not messages:
            return moved
        for message in messages:
            sqs.send_message(QueueUrl=harness.queue_url, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=harness.dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1


# -- the campaign -------------------------------------------------------------------------


def campaign(count: int, seed: int, work: Path, definitions: Path) -> dict[str, Any]:
    from functions.shared.contracts import ObjectRef
    from functions.shared.naming import execution_name
    from scanctl.harness import HarnessOptions, LocalScanner
    from scanctl.ops import redrive, replay_failures

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
            # EventBridge is best effort: some status changes never arrive.
            lost_events = max(1, count // LOST_EVENTS_EVERY)
            harness.status_changes.lose_next = lost_events
            chaos.injected["status-change-lost"] = lost_events
            for i, plan in enumerate(plans):
                tags = FORGED if plan.forged else None
                plan.version_id = harness.upload(plan.key, content(plan.kind, i), tags=tags)[
                    "VersionId"
                ]
                plan.name = execution_name(
                    ObjectRef("uploads", plan.key, version_id=plan.version_id)
                )
                chaos.by_name[plan.name] = plan
                if plan.fault == "deleted":
                    s3.delete_object(Bucket="uploads", Key=plan.key, VersionId=plan.version_id)
            names = harness.drain(max_rounds=10 * count)
            harness.wait(names, timeout_s=600 + count)
            # The hourly reconciliation, with the faults still there: it records what
            # it can (the lost status changes) and says what it could not.
            reconciled = reconcile(harness)
            first = classify(harness, plans)
            first_pass_s = time.monotonic() - started
            wrongly_marked = {
                p.key: f"during the faults: {why}"
                for p in plans
                if p.version_id and (why := misjudged_during(p, seen(harness, p)))
            }

            # The faults are fixed; the operator reconciles, redrives once, sends the
            # scan DLQ back to the queue and replays the recorder's DLQ.
            chaos.on = False
            reconciled_after = reconcile(harness)
            failed = {k for k, o in first.items() if o["outcome"] == FAILED_RECORDED}
            summary = redrive(
                harness.client("stepfunctions"), harness.state_machine_arn, dt.timedelta(hours=1)
            )
            by_key = {p.key: p for p in plans}
            harness.wait([by_key[k].name for k in sorted(failed)], timeout_s=600 + count)
            second = classify(harness, plans)
            requeued = replay_scan_dlq(harness)
            harness.wait(harness.drain(max_rounds=10 * count), timeout_s=600 + count)
            replayed = replay_failures(
                harness.client("sqs"), harness.client("lambda"), harness.failure_dlq_url,
                "record-failure",
            )  # fmt: skip
            for plan in plans:
                why = misjudged_at_end(plan, seen(harness, plan))
                if why and plan.key not in wrongly_marked:
                    wrongly_marked[plan.key] = f"at the end: {why}"

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
        "wrongly_marked": wrongly_marked,
        "by_fault_judged": _judged(plans, first, wrongly_marked),
        "reconciled": {"during": reconciled, "after": reconciled_after},
        "scan_dlq_requeued": requeued,
        "failure_dlq_replayed": len(replayed.replayed),
        "failure_dlq_kept": replayed.failed,
        "first_pass_s": round(first_pass_s, 1),
        "outcomes": first,
        "after_redrive": second,
    }


def reconcile(harness: Any) -> dict[str, Any]:
    """The scheduled reconciliation (record_failure with ``reconcile``), as it ran."""
    from functions.record_failure import app as recorder
    from functions.shared.errors import ReconciliationIncomplete

    try:
        result = harness.invoker.call(recorder, "record_failure", {"reconcile": {"hours": 1}})
    except ReconciliationIncomplete as err:
        return {"incomplete": str(err)[:300]}
    return {"caughtUp": len(result["caughtUp"])}


def _judged(
    plans: list[Plan], first: dict[str, dict[str, Any]], wrong: dict[str, str]
) -> list[dict[str, Any]]:
    """fault -> objects -> outcome -> lost / wrongly marked, one row per fault."""
    rows: dict[str, dict[str, Any]] = {}
    for plan in plans:
        row = rows.setdefault(
            plan.fault, {"fault": plan.fault, "objects": 0, "outcomes": collections.Counter(),
                         "lost": 0, "wrongly_marked": 0},
        )  # fmt: skip
        row["objects"] += 1
        outcome = first[plan.key]["outcome"]
        row["outcomes"][outcome] += 1
        row["lost"] += outcome == LOST
        row["wrongly_marked"] += plan.key in wrong
    return [{**row, "outcomes": dict(row["outcomes"])} for _, row in sorted(rows.items())]


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
    lines += [
        "| fault | objects | outcome (faults on) | lost | wrongly marked |",
        "|---|---:|---|---:|---:|",
    ]
    for row in result["by_fault_judged"]:
        outcomes = ", ".join(f"{n} {o}" for o, n in sorted(row["outcomes"].items()))
        lines.append(
            f"| {row['fault']} | {row['objects']} | {outcomes} | {row['lost']} | "
            f"{row['wrongly_marked']} |"
        )
    lines += ["", "| faults injected | times |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(result["injected"].items())]
    lines += [
        "",
        f"After one `scanctl redrive` with the faults off: {result['failed_then_recovered']} "
        f"FAILED executions SUCCEEDED with the same ARN and the right verdict "
        f"({result['redriven']} redriven, {len(result['not_redrivable'])} not redrivable); "
        f"{result['scan_dlq_requeued']} scan-DLQ messages sent back to the queue, "
        f"{result['failure_dlq_replayed']} recorder-DLQ messages replayed "
        f"({len(result['failure_dlq_kept'])} kept); "
        f"wrong verdicts: {len(result['wrong_verdicts'])}; lost: {len(result['lost'])}; "
        f"wrongly marked (judged by S3 and the audit table): "
        f"{len(result['wrongly_marked'])}.",
    ]
    lines += [f"- {k}: {why}" for k, why in sorted(result["wrongly_marked"].items())]
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
        and not result["wrongly_marked"]
        and result["recovered"] == result["failed"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
