"""Operator commands against a deployed scanner (or any endpoint): rescan, redrive, history."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from functions.record_audit.schema import (
    BY_VERDICT_INDEX,
    FAILURE_KEY,
    FAILURES_INDEX,
    PARTITION_KEY,
    SORT_KEY,
    from_item,
)
from functions.shared.aws import error_code
from functions.shared.contracts import REMOVING_ACTIONS, ObjectRef, TriggerSource
from functions.shared.naming import MAX_LENGTH, rescan_execution_name

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_THROTTLED = {"ThrottlingException", "TooManyRequestsException", "Throttling"}


class OperatorError(Exception):
    """A one-line problem to show the operator (exit status 2)."""


def parse_duration(text: str) -> dt.timedelta:
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise OperatorError(f"--since must look like 30m, 24h or 7d, got {text!r}")
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_s3_uri(uri: str, need_key: bool = False) -> tuple[str, str]:
    """Split by hand: a URL parser would cut keys at '#' or '?', both valid in S3 keys."""
    if not uri.startswith("s3://"):
        raise OperatorError(f"expected s3://bucket/key, got {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise OperatorError(f"expected s3://bucket/key, got {uri!r}")
    if need_key and not key:
        raise OperatorError(f"expected s3://bucket/key with a key, got {uri!r}")
    return bucket, key


@dataclass(frozen=True)
class Deployment:
    state_machine_arn: str | None
    table_name: str | None
    outputs: dict[str, str] = field(default_factory=dict)

    def need(self, value: str | None, what: str, option: str) -> str:
        if not value or value == "none":
            raise OperatorError(
                f"the {what} is unknown: pass {option}, or --stack with a deployment"
            )
        return value


def resolve_deployment(
    cfn: Any,
    stack: str,
    state_machine_arn: str | None = None,
    table: str | None = None,
    needs: tuple[str, ...] = ("state_machine_arn", "table"),
    **explicit: str | None,
) -> Deployment:
    """Explicit values win; the stack's outputs are read only for what is still missing.

    ``needs`` names what the command uses: ``state_machine_arn``, ``table``, or
    a stack output such as ``RescanStateMachineArn`` (given as ``explicit``).
    """
    given = {"state_machine_arn": state_machine_arn, "table": table, **explicit}
    if all(given.get(name) for name in needs):
        return Deployment(state_machine_arn, table, {k: v for k, v in explicit.items() if v})
    try:
        [described] = cfn.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as err:
        raise OperatorError(
            f"stack {stack!r} not found ({error_code(err)}); pass --stack, or the resources "
            "themselves (--state-machine-arn, --table)"
        ) from err
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    outputs.update({k: v for k, v in explicit.items() if v})
    return Deployment(
        state_machine_arn or outputs.get("StateMachineArn"),
        table or outputs.get("AuditTableName"),
        outputs,
    )


# -- the access gate --------------------------------------------------------------------------


def gate_roles(
    deployment: Deployment | None, readers: tuple[str, ...], taggers: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """The scanner's reading and tagging roles: given, or the stack's outputs."""
    outputs = deployment.outputs if deployment else {}
    readers = readers or tuple(filter(None, outputs.get("AccessGateReaderRoleArns", "").split(",")))
    taggers = taggers or tuple(
        filter(None, outputs.get("AccessGateTaggingRoleArns", "").split(","))
    )
    if not readers or not taggers:
        raise OperatorError(
            "the scanner's roles are unknown: deploy the stack (its outputs name them) or "
            "pass --reader-role and --tagging-role"
        )
    return list(readers), list(taggers)


@dataclass(frozen=True)
class PolicyChange:
    before: dict[str, Any] | None
    after: dict[str, Any]

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        import difflib

        def lines(policy: dict[str, Any] | None) -> list[str]:
            return json.dumps(policy, indent=2, sort_keys=True).splitlines() if policy else []

        return "\n".join(
            difflib.unified_diff(
                lines(self.before), lines(self.after), "current", "with the gate", lineterm=""
            )
        )


def merge_gate(s3: Any, bucket: str, statements: list[dict[str, Any]], apply: bool) -> PolicyChange:
    """Merge the gate into the bucket's policy by Sid; write it only if ``apply``."""
    from functions.shared.access_gate import merge

    try:
        current = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as err:
        if error_code(err) != "NoSuchBucketPolicy":
            raise
        current = None
    change = PolicyChange(current, merge(current, statements))
    if apply and change.changed:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(change.after))
    return change


# -- rescan -------------------------------------------------------------------------------


@dataclass
class RescanSummary:
    run_id: str
    objects: int = 0
    started: int = 0
    already_started: int = 0
    skipped: int = 0
    up_to_date: int = 0
    throttled: int = 0
    keys: list[str] = field(default_factory=list)


def rescan_picker(
    s3: Any,
    bucket: str,
    mode: str,
    scanned_before: dt.datetime | None = None,
    definitions_version: str | None = None,
    dynamodb: Any = None,
    table: str | None = None,
) -> Callable[[ObjectRef], ObjectRef | None]:
    """The Rescan machine's choice, made here: same modes, same tag and audit reads."""
    from functions.rescan_batch.selection import Mode, Request, Selector

    request = Request(
        bucket=bucket,
        run_id="local",
        mode=Mode(mode),
        scanned_before=scanned_before.isoformat() if scanned_before else None,
        definitions_version=definitions_version,
    )
    selector = Selector(s3, None, "", bucket, dynamodb, table)
    return lambda obj: selector.pick(request, obj)


def list_objects(s3: Any, bucket: str, prefix: str) -> Iterator[ObjectRef]:
    """Current versions under the prefix (works for versioned and unversioned buckets)."""
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            if not version.get("IsLatest"):
                continue
            version_id = version.get("VersionId")
            yield ObjectRef(
                bucket=bucket,
                key=version["Key"],
                version_id=None if version_id in (None, "null") else version_id,
                size=version.get("Size"),
                etag=str(version.get("ETag", "")).strip('"') or None,
            )


def rescan(
    s3: Any,
    sfn: Any,
    state_machine_arn: str,
    bucket: str,
    prefix: str,
    *,
    dry_run: bool = False,
    rate_per_s: float = 50.0,
    run_id: str | None = None,
    on_object: Callable[[ObjectRef], None] = lambda obj: None,
    sleep: Callable[[float], None] = time.sleep,
    pick: Callable[[ObjectRef], ObjectRef | None] = lambda obj: obj,
) -> RescanSummary:
    """One execution per existing object ``pick`` keeps, named apart from event-driven ones."""
    summary = RescanSummary(run_id=run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S"))
    interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
    for listed in list_objects(s3, bucket, prefix):
        summary.objects += 1
        on_object(listed)
        if listed.key.endswith("/") and not listed.size:
            summary.skipped += 1
            continue
        obj = pick(listed)
        if obj is None:
            summary.up_to_date += 1
            continue
        name = rescan_execution_name(obj, summary.run_id)
        if dry_run:
            summary.keys.append(obj.key)
            continue
        payload = {
            "object": obj.to_dict(),
            "trigger": {
                "source": str(TriggerSource.RESCAN),
                "runId": summary.run_id,
                "requestedAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
        }
        if _start(sfn, state_machine_arn, name, payload, summary, sleep):
            summary.started += 1
        else:
            summary.already_started += 1
        if interval:
            sleep(interval)
    return summary


def _start(
    sfn: Any,
    arn: str,
    name: str,
    payload: dict[str, Any],
    summary: RescanSummary,
    sleep: Callable[[float], None],
    attempts: int = 8,
) -> bool:
    """Start one execution; back off on throttling. False if it already exists."""
    delay = 0.5
    for attempt in range(attempts):
        try:
            sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))
            return True
        except ClientError as err:
            code = error_code(err)
            if code == "ExecutionAlreadyExists":
                return False
            if code not in _THROTTLED or attempt == attempts - 1:
                raise
            summary.throttled += 1
            sleep(delay)
            delay = min(delay * 2, 20.0)
    return False


# -- rescan, by the Rescan state machine ---------------------------------------------------


def parse_moment(text: str, option: str) -> str:
    """``30d`` / ``24h`` (that long ago) or an ISO time, as an ISO time."""
    try:
        return (dt.datetime.now(dt.UTC) - parse_duration(text)).isoformat(timespec="seconds")
    except OperatorError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise OperatorError(
            f"{option} must be like 30d, 24h or an ISO time, got {text!r}"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).isoformat(
        timespec="seconds"
    )


def start_rescan(
    sfn: Any,
    rescan_state_machine_arn: str,
    prefix: str,
    *,
    mode: str = "all",
    scanned_before: str | None = None,
    definitions_version: str | None = None,
    inventory: tuple[str, str] | None = None,
    run_id: str | None = None,
) -> tuple[str, str]:
    """Start the Rescan machine; (run id, execution ARN)."""
    import statemachines

    run_id = run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    payload = statemachines.rescan_input(
        prefix,
        run_id,
        mode,
        scanned_before,
        definitions_version,
        {"bucket": inventory[0], "key": inventory[1]} if inventory else None,
    )
    started = sfn.start_execution(
        stateMachineArn=rescan_state_machine_arn, name=f"rescan-{run_id}", input=json.dumps(payload)
    )
    return run_id, started["executionArn"]


def rescan_progress(sfn: Any, execution_arn: str) -> dict[str, Any]:
    """The run's status and its Map Run's item counts (as far as they are known)."""
    described = sfn.describe_execution(executionArn=execution_arn)
    counts: dict[str, Any] = {}
    runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
    if runs:
        counts = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"]).get("itemCounts", {})
    return {"status": described["status"], "items": counts}


# -- redrive -----------------------------------------------------------------------------------

# Step Functions redrives Standard executions that stopped within this window.
REDRIVE_WINDOW = dt.timedelta(days=14)


@dataclass
class RedriveSummary:
    unsuccessful: int = 0
    redriven: list[str] = field(default_factory=list)
    restarted: list[tuple[str, str]] = field(default_factory=list)  # (original, new)
    not_redrivable: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    already_handled: list[str] = field(default_factory=list)
    throttled: int = 0


_RETRY_SUFFIX = re.compile(r"-r(\d+)$")
# Room for "-r999" after the chain's stem within Step Functions' 80 characters.
_STEM = MAX_LENGTH - 5


def _stem(name: str) -> str:
    """The part an execution shares with its re-runs: ``<stem>-r<n>``."""
    return _RETRY_SUFFIX.sub("", name)[:_STEM]


def _execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"


def _unsuccessful_since(sfn: Any, arn: str, cutoff: dt.datetime) -> list[dict[str, Any]]:
    """FAILED, TIMED_OUT and ABORTED executions started after ``cutoff``.

    Listed per status and newest first, stopping at the cutoff: a busy state
    machine holds 90 days of executions, and ListExecutions is throttled.
    """
    found = []
    for status in ("FAILED", "TIMED_OUT", "ABORTED"):
        paginator = sfn.get_paginator("list_executions")
        for page in paginator.paginate(
            stateMachineArn=arn, statusFilter=status, PaginationConfig={"PageSize": 1000}
        ):
            executions = page["executions"]
            found += [e for e in executions if e["startDate"] >= cutoff]
            if executions and executions[-1]["startDate"] < cutoff:
                break
    return found


def _status(sfn: Any, arn: str) -> str | None:
    try:
        return sfn.describe_execution(executionArn=arn)["status"]
    except ClientError as err:
        if error_code(err) == "ExecutionDoesNotExist":
            return None
        raise


def _throttled(
    call: Callable[[], Any], summary: RedriveSummary, sleep: Callable[[float], None]
) -> Any:
    """``call()``, backing off while Step Functions throttles."""
    delay = 0.5
    for attempt in range(8):
        try:
            return call()
        except ClientError as err:
            if error_code(err) not in _THROTTLED or attempt == 7:
                raise
            summary.throttled += 1
            sleep(delay)
            delay = min(delay * 2, 20.0)
    return None


def redrive(
    sfn: Any,
    state_machine_arn: str,
    since: dt.timedelta,
    *,
    as_new: bool = False,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RedriveSummary:
    """Re-run the unsuccessful executions that started within ``since``.

    Within Step Functions' 14 days (from when it stopped), RedriveExecution: the console's Redrive,
    in bulk. The execution keeps its ARN and resumes at the state that failed,
    with the results of the states before it (a scanned object is not scanned
    again). Older ones, or all with ``as_new``, start again as new executions
    with the same input, named ``<stem>-r<n>``; a chain whose latest re-run is
    running or succeeded is left alone, so running this twice re-runs nothing
    twice.
    """
    now = now or dt.datetime.now(dt.UTC)
    summary = RedriveSummary()
    handled: set[str] = set()
    for execution in _unsuccessful_since(sfn, state_machine_arn, now - since):
        stem = _stem(execution["name"])
        if stem in handled:
            continue
        handled.add(stem)
        summary.unsuccessful += 1
        attempt, settled = _chain(sfn, state_machine_arn, stem)
        if settled:
            # An earlier --as-new re-run is running or succeeded: do not run it twice.
            summary.already_handled.append(execution["name"])
            continue
        # AWS counts the 14 days from when the execution stopped.
        stopped = execution.get("stopDate") or execution["startDate"]
        if not as_new and now - stopped < REDRIVE_WINDOW:
            _redrive_one(sfn, execution, summary, dry_run, sleep)
        else:
            _restart_one(
                sfn, state_machine_arn, execution, f"{stem}-r{attempt}", summary, dry_run, sleep
            )
    return summary


def _chain(sfn: Any, state_machine_arn: str, stem: str) -> tuple[int, bool]:
    """The next re-run number of ``<stem>-r<n>``, and whether one is running or succeeded."""
    attempt, settled = 1, False
    while status := _status(sfn, _execution_arn(state_machine_arn, f"{stem}-r{attempt}")):
        settled = settled or status in ("RUNNING", "SUCCEEDED")
        attempt += 1
    return attempt, settled


def _redrive_one(
    sfn: Any,
    execution: dict[str, Any],
    summary: RedriveSummary,
    dry_run: bool,
    sleep: Callable[[float], None],
) -> None:
    name, arn = execution["name"], execution["executionArn"]
    if dry_run:
        summary.redriven.append(name)
        return
    described = sfn.describe_execution(executionArn=arn)
    # The same token for the same redrive: a retried call cannot redrive twice.
    token = f"{uuid.uuid5(uuid.NAMESPACE_URL, arn).hex}-{described.get('redriveCount', 0)}"
    try:
        _throttled(
            lambda: sfn.redrive_execution(executionArn=arn, clientToken=token), summary, sleep
        )
    except ClientError as err:
        code = error_code(err)
        if code not in ("ExecutionNotRedrivable", "ExecutionLimitExceeded"):
            raise
        message = err.response.get("Error", {}).get("Message") or code
        summary.not_redrivable.append((name, f"{code}: {message}"))
        return
    summary.redriven.append(name)


def _restart_one(
    sfn: Any,
    state_machine_arn: str,
    execution: dict[str, Any],
    new_name: str,
    summary: RedriveSummary,
    dry_run: bool,
    sleep: Callable[[float], None],
) -> None:
    if dry_run:
        summary.restarted.append((execution["name"], new_name))
        return
    described = sfn.describe_execution(executionArn=execution["executionArn"])
    payload = json.loads(described.get("input") or "{}")
    payload.setdefault("trigger", {})["retryOf"] = execution["name"]
    try:
        _throttled(
            lambda: sfn.start_execution(
                stateMachineArn=state_machine_arn, name=new_name, input=json.dumps(payload)
            ),
            summary,
            sleep,
        )
    except ClientError as err:
        if error_code(err) != "ExecutionAlreadyExists":
            raise
        summary.already_handled.append(execution["name"])
        return
    summary.restarted.append((execution["name"], new_name))


def redrive_express(
    ddb: Any,
    table: str,
    sfn: Any,
    standard_state_machine_arn: str,
    since: dt.timedelta,
    summary: RedriveSummary,
    dry_run: bool = False,
) -> None:
    """Express failures (recorded in the audit table, not redrivable) started again on
    the Standard machine, under the same execution name: a second run finds it taken."""
    for item in recent(ddb, table, None, since, limit=100_000, failed=True):
        if item.get("workflow") != "EXPRESS" or item.get("rerunOn"):
            continue
        name = str(item["executionName"])
        summary.unsuccessful += 1
        if item.get("action") in REMOVING_ACTIONS:
            # Its verdict was applied before it failed (a webhook, the audit write):
            # a new scan would find the version gone and call it skipped.
            summary.not_redrivable.append(
                (name, f"{item['action']} before it failed at {item.get('failedState')}")
            )
            continue
        if dry_run:
            summary.restarted.append((name, f"{name} (Standard)"))
            continue
        payload = {
            "object": ObjectRef.from_audit_item(item).to_dict(),
            "trigger": {**(item.get("trigger") or {}), "retryOf": item.get("executionArn")},
        }
        # StartExecution with a running execution's name and input returns that
        # execution as if it were new: look first, so a second run says so.
        if _execution_exists(sfn, standard_state_machine_arn, name):
            summary.already_handled.append(name)
            continue
        try:
            sfn.start_execution(
                stateMachineArn=standard_state_machine_arn,
                name=name,
                input=json.dumps(payload, default=str),
            )
        except ClientError as err:
            if error_code(err) != "ExecutionAlreadyExists":
                raise
            summary.already_handled.append(name)
            continue
        summary.restarted.append((name, f"{name} (Standard)"))


@dataclass
class ReplaySummary:
    replayed: list[str] = field(default_factory=list)  # message ids recorded and removed
    failed: list[tuple[str, str]] = field(default_factory=list)  # (message id, why): kept


def recorder_input(body: str) -> Any:
    """What the failure recorder was to be given, from a message in its DLQ: the
    event itself (EventBridge's DLQ; Express's Keep The Failure), or Lambda's
    on-failure record around it (``requestPayload``)."""
    message = json.loads(body)
    if isinstance(message, dict) and "requestPayload" in message:
        return message["requestPayload"]
    return message


_REPLAY_HOLD_S = 900


def replay_failures(
    sqs: Any, lam: Any, queue_url: str, function: str, dry_run: bool = False
) -> ReplaySummary:
    """Each message in the recorder's DLQ given to the recorder again; removed once it
    recorded it. One that fails again (or a dry run's) stays, visible again at the end."""
    summary = ReplaySummary()
    seen: set[str] = set()
    peeked: list[str] = []  # receipts of what stays: visible again at the end
    empty = 0
    # Two receives in a row with nothing new, each a short long-poll (which asks every
    # server; a short poll may miss messages that are there). What was read stays
    # hidden for the run, so it does not come back and its receipt stays valid.
    while empty < 2:
        messages = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=_REPLAY_HOLD_S,
            WaitTimeSeconds=1,
        ).get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in seen]
        empty = 0 if fresh else empty + 1
        for message in fresh:
            seen.add(message["MessageId"])
            try:
                payload = recorder_input(message["Body"])
            except ValueError as err:
                summary.failed.append((message["MessageId"], f"not JSON: {err}"))
                peeked.append(message["ReceiptHandle"])
                continue
            if dry_run:
                summary.replayed.append(message["MessageId"])
                peeked.append(message["ReceiptHandle"])
                continue
            answer = lam.invoke(
                FunctionName=function, InvocationType="RequestResponse", Payload=json.dumps(payload)
            )
            if answer.get("FunctionError"):
                why = answer["Payload"].read().decode(errors="replace")[:300]
                summary.failed.append((message["MessageId"], why))
                peeked.append(message["ReceiptHandle"])
                continue
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            summary.replayed.append(message["MessageId"])
    for receipt in peeked:
        sqs.change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=receipt, VisibilityTimeout=0
        )
    return summary


def _execution_exists(sfn: Any, state_machine_arn: str, name: str) -> bool:
    try:
        sfn.describe_execution(executionArn=_execution_arn(state_machine_arn, name))
    except ClientError as err:
        if error_code(err) == "ExecutionDoesNotExist":
            return False
        raise
    return True


# -- history ------------------------------------------------------------------------------------


def _items(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [from_item(item) for item in response["Items"]]


def history(ddb: Any, table: str, bucket: str, key: str) -> list[dict[str, Any]]:
    """Every recorded scan of one object, oldest first."""
    items: list[dict[str, Any]] = []
    args = {
        "TableName": table,
        "KeyConditionExpression": "#pk = :pk",
        "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
        "ExpressionAttributeValues": {":pk": {"S": f"s3://{bucket}/{key}"}},
    }
    while True:
        response = ddb.query(**args)
        items += _items(response)
        if "LastEvaluatedKey" not in response:
            return items
        args["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def recent(
    ddb: Any,
    table: str,
    verdict: str | None,
    since: dt.timedelta,
    limit: int = 1000,
    failed: bool = False,
) -> list[dict]:
    """Scans with this verdict (or failed runs) that started within ``since``, newest first."""
    cutoff = (dt.datetime.now(dt.UTC) - since).strftime("%Y-%m-%dT%H:%M:%S")
    items: list[dict[str, Any]] = []
    if failed:
        index, attribute, value = FAILURES_INDEX, FAILURE_KEY, "failed"
    else:
        index, attribute, value = BY_VERDICT_INDEX, "verdict", str(verdict)
    args = {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": "#pk = :v AND #sk >= :since",
        "ExpressionAttributeNames": {"#pk": attribute, "#sk": SORT_KEY},
        "ExpressionAttributeValues": {":v": {"S": value}, ":since": {"S": cutoff}},
        "ScanIndexForward": False,
    }
    while len(items) < limit:
        response = ddb.query(**args)
        items += _items(response)
        if "LastEvaluatedKey" not in response:
            break
        args["ExclusiveStartKey"] = response["LastEvaluatedKey"]
    return items[:limit]


def handled_later(ddb: Any, table: str, failed: dict[str, Any]) -> bool:
    """Whether a later run that did not fail scanned the same object version (a re-run
    with --as-new, a rescan, a redrive of an Express failure on Standard)."""
    args = {
        "TableName": table,
        "KeyConditionExpression": "#pk = :pk AND #sk > :after",
        "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#sk": SORT_KEY},
        "ExpressionAttributeValues": {
            ":pk": {"S": str(failed["object"])},
            ":after": {"S": str(failed["scanId"])},
        },
    }
    version = failed.get("versionId")
    while True:
        response = ddb.query(**args)
        for item in _items(response):
            if (
                not item.get(FAILURE_KEY)
                and not item.get("failed")
                and item.get("verdict") != RELEASED  # a release scans nothing
                and (item.get("versionId") == version)
            ):
                return True
        if "LastEvaluatedKey" not in response:
            return False
        args["ExclusiveStartKey"] = response["LastEvaluatedKey"]


# -- release --------------------------------------------------------------------------------


RELEASED = "released"  # the release item's verdict: `scanctl recent --verdict released`
RELEASE_DETAIL_TYPE = "Object Released"
RELEASE_EVENT = "object.released"


@dataclass
class ReleaseSummary:
    released: dict[str, Any]
    audit: dict[str, str]
    published: bool = False
    notified: bool | None = None  # None: no webhook
    rescan: str | None = None  # the execution started, if the version is still there
    notes: list[str] = field(default_factory=list)


def release(
    clients: dict[str, Any],
    table: str,
    obj: ObjectRef,
    reason: str,
    by: str,
    *,
    state_machine_arn: str | None,
    event_bus: str | None,
    notify_function: str | None,
    rescan_after: bool = True,
) -> ReleaseSummary:
    """Lift the infected hold on one version (a false positive), and say so everywhere.

    The hold goes (functions/shared/holds.py), an audit item records who released
    it and why, an ``Object Released`` event goes to the results bus and an
    ``object.released`` notice to the webhook; then, if the version is still in
    the bucket, a scan decides again. Nothing is restored from quarantine: an
    operator who wants the content back copies it, and the copy is scanned as
    any upload is.
    """
    from functions.record_audit.audit import write_item
    from functions.shared.clock import utc_now_iso
    from functions.shared.holds import HoldStore, NotHeld
    from functions.shared.results_bus import SOURCE

    if not reason.strip():
        raise OperatorError("--reason must say why the version is released")
    try:
        hold = HoldStore(clients["dynamodb"], table).release(obj)
    except NotHeld as err:
        raise OperatorError(f"{err}: nothing to release") from err
    at = utc_now_iso("milliseconds")  # sorts among scan ids (their start, to the ms)
    detail = {
        "bucket": obj.bucket,
        "key": obj.key,
        "versionId": obj.version_id,
        "eTag": obj.etag,
        "reason": reason,
        "releasedBy": by,
        "releasedAt": at,
        "hold": hold.to_dict(),
    }
    item = {
        PARTITION_KEY: obj.uri,
        SORT_KEY: f"{at}#release-{uuid.uuid4().hex[:8]}",
        "verdict": RELEASED,
        "action": RELEASED,
        "signatures": [hold.signature],
        **{k: v for k, v in detail.items() if k not in ("hold",)},
        "held": hold.to_dict(),
    }
    summary = ReleaseSummary(detail, write_item(clients["dynamodb"], table, item))
    # The hold is gone and recorded; what follows tells others. A failure there
    # is reported, not undone.
    try:
        answer = clients["events"].put_events(
            Entries=[
                {
                    "Source": SOURCE,
                    "DetailType": RELEASE_DETAIL_TYPE,
                    "Detail": json.dumps(detail),
                    "EventBusName": event_bus or "default",
                }
            ]
        )
        summary.published = not answer.get("FailedEntryCount")
    except ClientError as err:
        summary.notes.append(f"the {RELEASE_DETAIL_TYPE} event was not published: {err}")
    if notify_function:
        summary.notified = _notify_release(clients["lambda"], notify_function, detail, summary)
    if rescan_after and state_machine_arn:
        summary.rescan = _rescan_released(clients, state_machine_arn, obj, at, summary)
    elif rescan_after:
        summary.notes.append("no state machine known: the version was not scanned again")
    return summary


def _notify_release(lam: Any, function: str, detail: dict[str, Any], summary: Any) -> bool:
    payload = {"release": detail}
    try:
        response = lam.invoke(FunctionName=function, Payload=json.dumps(payload).encode())
    except ClientError as err:
        summary.notes.append(f"the webhook notice was not sent: {err}")
        return False
    if response.get("FunctionError"):
        body = json.loads(response["Payload"].read() or b"null")
        message = body.get("errorMessage") if isinstance(body, dict) else body
        summary.notes.append(f"the webhook notice was not delivered: {message}")
        return False
    return True


def _rescan_released(
    clients: dict[str, Any], arn: str, obj: ObjectRef, at: str, summary: Any
) -> str | None:
    """Scan the released version again, if it is still in the bucket."""
    try:
        head = clients["s3"].head_object(Bucket=obj.bucket, Key=obj.key, **obj.pin_args)
    except ClientError as err:
        if error_code(err) in ("404", "NoSuchKey", "NoSuchVersion", "412", "PreconditionFailed"):
            summary.notes.append("the version is no longer in the bucket: nothing to scan again")
            return None
        raise
    current = ObjectRef(
        obj.bucket,
        obj.key,
        obj.version_id,
        head.get("ContentLength"),
        str(head.get("ETag") or "").strip('"') or None,  # as S3's events spell it
    )
    name = rescan_execution_name(current, f"release-{at}")
    payload = {
        "object": current.to_dict(),
        "trigger": {"source": str(TriggerSource.MANUAL), "release": at, "requestedAt": at},
    }
    clients["stepfunctions"].start_execution(
        stateMachineArn=arn, name=name, input=json.dumps(payload)
    )
    return name
