"""What scanning costs: dollars per million objects and per GB, next to GuardDuty's price.

Dependency-free. The Step Functions path is not hard-coded: ``walk()`` follows
the real ASL (statemachines/scan_object.asl.json) from ``StartAt``, runs its
Pass and Choice states against the outcome of a scenario (the verdict, the
webhook switch) and returns every state entered. Each state entered is one
billed state transition, the start state and the terminal state included.
What each Task costs (Lambda memory and duration, S3 requests) is keyed by the
states the walk visits, so a change to the ASL changes the figures.

    .venv/bin/python bench/cost.py                 # markdown: 100 KB, 1 MB, 10 MB
    .venv/bin/python bench/cost.py --size 5MB --verdict infected --webhook
    .venv/bin/python bench/cost.py --json
    .venv/bin/python bench/cost.py --workflow express   # requests + duration + log ingestion

Every list price is in PRICES, with its unit, source and the date it was read;
every workload assumption is in WORKLOAD. docs/cost.md explains both.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ASL_PATH = ROOT / "statemachines" / "scan_object.asl.json"
sys.path.insert(0, str(ROOT))
import statemachines  # noqa: E402 - the one place that derives the deployed variant

KIB, MIB, GIB = 1024, 1024**2, 1024**3

# On-demand list prices, us-east-1, USD. "status": "aws" = read on an AWS page;
# "secondary" = read on a third-party page that quotes AWS's price; "unconfirmed"
# = no search result showed it, best-known published figure.
READ = "2026-11-28"
PRICES: dict[str, Any] = {
    "region": "us-east-1",
    "currency": "USD",
    "items": {
        "sfn_standard_transition": {
            "usd": 0.025 / 1000,
            "unit": "state transition (Standard workflow)",
            "listed": "$0.025 per 1,000 state transitions",
            "source": "https://aws.amazon.com/step-functions/pricing/",
            "read": READ,
            "status": "aws",
        },
        "sfn_express_request": {
            "usd": 1.00 / 1e6,
            "unit": "Express workflow request (execution started)",
            "listed": "$1.00 per 1M requests",
            "source": "https://aws.amazon.com/step-functions/pricing/ (as mirrored in "
            "https://mdsite.deno.dev/https://aws.amazon.com/step-functions/pricing)",
            "read": READ,
            "status": "secondary",
        },
        "sfn_express_gb_second": {
            "usd": 0.06 / 3600,
            "unit": "Express workflow GB-second, first 1,000 GB-hours a month "
            "(memory in 64 MB chunks, duration rounded up to 100 ms)",
            "listed": "$0.06000 per GB-hour (next 4,000: $0.03; beyond: $0.01642)",
            "source": "https://aws.amazon.com/step-functions/pricing/ (as mirrored in "
            "https://mdsite.deno.dev/https://aws.amazon.com/step-functions/pricing)",
            "read": READ,
            "status": "secondary",
        },
        "cloudwatch_logs_ingestion_gb": {
            "usd": 0.50,
            "unit": "GB ingested into CloudWatch Logs (Standard class; vended logs' first tier)",
            "listed": "$0.50 per GB",
            "source": "https://aws.amazon.com/cloudwatch/pricing/",
            "read": READ,
            "status": "unconfirmed",
        },
        "lambda_request": {
            "usd": 0.20 / 1e6,
            "unit": "Lambda request",
            "listed": "$0.20 per 1M requests",
            "source": "https://docs.aws.amazon.com/whitepapers/latest/how-aws-pricing-works/lambda.html",
            "read": READ,
            "status": "aws",
        },
        "lambda_gb_second_x86": {
            "usd": 0.0000166667,
            "unit": "GB-second, x86, first 6 billion GB-s a month",
            "listed": "$0.0000166667 per GB-second (AWS whitepaper rounds: $0.00001667)",
            "source": "https://cloudchipr.com/blog/aws-lambda-pricing",
            "read": READ,
            "status": "secondary",
        },
        "lambda_ephemeral_gb_second": {
            "usd": 0.0000000309,
            "unit": "GB-second of ephemeral storage above the free 512 MB",
            "listed": "$0.0000000309 per GB-second",
            "source": "https://aws.amazon.com/lambda/pricing/",
            "read": READ,
            "status": "unconfirmed",
        },
        "sqs_standard_request": {
            "usd": 0.40 / 1e6,
            "unit": "SQS standard request (64 KB chunk), first 100 billion a month",
            "listed": "$0.40 per 1M requests",
            "source": "https://cloudburn.io/blog/amazon-sqs-pricing",
            "read": READ,
            "status": "secondary",
        },
        "dynamodb_on_demand_wru": {
            "usd": 0.625 / 1e6,
            "unit": "write request unit, on-demand, Standard table class",
            "listed": "$0.625 per 1M WRU (was $1.25 before the 1 Nov 2024 50% cut)",
            "source": "https://airbyte.com/data-engineering-resources/dynamodb-pricing",
            "read": READ,
            "status": "secondary",
        },
        "s3_put_copy_post_list": {
            "usd": 0.005 / 1000,
            "unit": "S3 Standard PUT, COPY, POST, LIST request (PutObjectTagging included)",
            "listed": "$0.005 per 1,000 requests",
            "source": "https://c3x.dev/blog/s3-request-fees-explained",
            "read": READ,
            "status": "secondary",
        },
        "s3_get_and_other": {
            "usd": 0.0004 / 1000,
            "unit": "S3 Standard GET, HEAD, SELECT and all other requests (GetObjectTagging)",
            "listed": "$0.0004 per 1,000 requests; DELETE is free",
            "source": "https://c3x.dev/blog/s3-request-fees-explained",
            "read": READ,
            "status": "secondary",
        },
        "s3_standard_gb_month": {
            "usd": 0.023,
            "unit": "GB-month, S3 Standard, first 50 TB",
            "listed": "$0.023 per GB-month",
            "source": "https://devnotes.tech/understanding-aws-s3-pricing-a-complete-cost-breakdown-with-examples",
            "read": READ,
            "status": "secondary",
        },
        "guardduty_s3_gb_scanned": {
            "usd": 0.09,
            "unit": "GB scanned, GuardDuty Malware Protection for S3",
            "listed": "$0.09 per GB (was $0.60 at launch in June 2024; cut 85% in Feb 2025)",
            "source": "https://aws.amazon.com/guardduty/pricing/ (as transcribed in "
            "https://raw.githubusercontent.com/api-evangelist/amazon-guardduty/refs/heads/main/"
            "plans/amazon-guardduty-plans-pricing.yml)",
            "read": READ,
            "status": "secondary",
        },
        "guardduty_s3_object_evaluated": {
            "usd": 0.215 / 1000,
            "unit": "object evaluated, GuardDuty Malware Protection for S3",
            "listed": "$0.215 per 1,000 objects evaluated (unchanged since launch)",
            "source": "https://aws.amazon.com/guardduty/pricing/ (as transcribed in "
            "https://raw.githubusercontent.com/api-evangelist/amazon-guardduty/refs/heads/main/"
            "plans/amazon-guardduty-plans-pricing.yml)",
            "read": READ,
            "status": "secondary",
        },
    },
}

# What one object costs us, besides the state machine's own path.
WORKLOAD: dict[str, Any] = {
    # Lambda: memory, and warm duration per invocation (cold starts excluded).
    "functions": {
        "start_scan": {"memory_mb": 256, "ms": 100, "note": "per batch of sqs_batch_size"},
        "fetch_definitions": {"memory_mb": 256, "ms": 100},
        "scan_object": {
            "memory_mb": 3008,
            "ms": 50,
            "mib_per_s": 200,
            "ephemeral_mb": 6144,
            "note": "50 ms + size / 200 MiB/s (download and scan)",
        },
        "apply_verdict": {"memory_mb": 256, "ms": 150},
        "record_audit": {"memory_mb": 256, "ms": 50},
        "notify_webhook": {"memory_mb": 256, "ms": 200, "note": "assumed; depends on the receiver"},
    },
    "free_ephemeral_mb": 512,
    # S3 requests made by the Task in each state. "get" = GET-tier (GET, HEAD,
    # GetObjectTagging), "put" = PUT-tier (PutObjectTagging, CopyObject),
    # "get_per_part" = one GET per started part of part_bytes (one plain GET up
    # to 8 MiB; above that boto3's download_file: ranged 8 MiB GETs, after a
    # HeadObject of its own, "get_if_multipart").
    "part_bytes": 8 * MIB,
    "s3_requests_by_state": {
        "Fetch Definitions": {"get": 2},  # GetObject manifest + HeadObject tarball
        # Our HeadObject, then the GETs (and download_file's HeadObject above 8 MiB).
        "Scan Object": {"get": 1, "get_per_part": 1, "get_if_multipart": 1},
        "Tag As Clean": {"get": 1, "put": 1},  # GetObjectTagging + PutObjectTagging
        "Tag As Unscannable": {"get": 1, "put": 1},
        # Tag first (Get+PutObjectTagging), CopyObject to quarantine, DeleteObject (free).
        "Quarantine Or Delete": {"get": 1, "put": 2, "free": 1},
    },
    "sqs_batch_size": 10,  # S3 sends 1 message; the poller receives and deletes in batches
    "dynamodb_wru_per_object": 2,  # one PutItem < 1 KB: table + the by-verdict GSI
    # GuardDuty reads the object and, with tagging on, tags it: S3 bills both to the owner.
    "guardduty_s3_requests": {"get": 1, "put": 1},
    # Express: billed memory is 50 MB + definition + execution data, one 64 MB chunk
    # here; duration is the Tasks' time plus Lambda's invoke round trip each.
    # Log bytes per execution (level ALL; both types) as bench/express_logs.py measures them for
    # a clean object without a webhook (5 states, 24 events), CloudWatch's 26 bytes of
    # metering per event included; other paths scale by the states they enter.
    "express": {
        "memory_mb": 64,
        "invoke_overhead_ms": 30,
        "log_bytes": {"execution_data": 26325, "no_execution_data": 8716},
        "log_bytes_states": 5,
        "measured": "2026-11-28, bench/express_logs.py",
    },
    # Fixed monthly: the definitions updater and the tarball it keeps.
    "updater": {"memory_mb": 2048, "seconds": 60, "runs_per_month": 730 / 4, "ephemeral_mb": 2048},
    "tarball_mb": 300,
}

DEFAULT_SIZES = (100 * KIB, MIB, 10 * MIB)
SCENARIOS = {
    "clean": ("clean", False),
    "clean+webhook": ("clean", True),
    "infected": ("infected", False),
    "infected+webhook": ("infected", True),
}


# ---------------------------------------------------------------- the ASL walk


def load_asl(path: Path = ASL_PATH) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _get(doc: Any, path: str) -> tuple[bool, Any]:
    """A simple JSONPath ($.a.b) lookup: (found, value)."""
    if path == "$":
        return True, doc
    if not path.startswith("$."):
        raise ValueError(f"unsupported path {path!r}")
    for part in path[2:].split("."):
        if not isinstance(doc, dict) or part not in doc:
            return False, None
        doc = doc[part]
    return True, doc


def _set(doc: dict[str, Any], path: str | None, value: Any) -> dict[str, Any]:
    if path is None:
        return doc
    if path == "$":
        return value if isinstance(value, dict) else {"value": value}
    parts = path[2:].split(".")
    node = doc
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return doc


def _fill(value: Any, substitutions: dict[str, str], doc: Any = None) -> Any:
    """Replace ${Placeholder} as DefinitionSubstitutions does; resolve "key.$": "$.path"."""
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)\}", lambda m: substitutions.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key.endswith(".$"):
                # Simple paths only; context ($$.) and intrinsic functions become None.
                simple = isinstance(item, str) and (item == "$" or item.startswith("$."))
                out[key[:-2]] = _get(doc, item)[1] if simple else None
            else:
                out[key] = _fill(item, substitutions, doc)
        return out
    if isinstance(value, list):
        return [_fill(v, substitutions, doc) for v in value]
    return value


def _matches(pattern: str, text: str) -> bool:
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), text) is not None


_COMPARE = {
    "StringEquals": lambda v, x: isinstance(v, str) and v == x,
    "StringMatches": lambda v, x: isinstance(v, str) and _matches(x, v),
    "BooleanEquals": lambda v, x: isinstance(v, bool) and v == x,
    "NumericEquals": lambda v, x: isinstance(v, int | float) and v == x,
    "NumericGreaterThan": lambda v, x: isinstance(v, int | float) and v > x,
    "NumericLessThan": lambda v, x: isinstance(v, int | float) and v < x,
    "IsNull": lambda v, x: (v is None) == x,
    "IsString": lambda v, x: isinstance(v, str) == x,
    "IsBoolean": lambda v, x: isinstance(v, bool) == x,
}


def evaluate(rule: dict[str, Any], doc: Any) -> bool:
    """One Choice rule (And / Or / Not / Variable + operator) against the state."""
    if "And" in rule:
        return all(evaluate(r, doc) for r in rule["And"])
    if "Or" in rule:
        return any(evaluate(r, doc) for r in rule["Or"])
    if "Not" in rule:
        return not evaluate(rule["Not"], doc)
    found, value = _get(doc, rule["Variable"])
    if "IsPresent" in rule:
        return found == rule["IsPresent"]
    ops = [op for op in _COMPARE if op in rule]
    if len(ops) != 1:
        raise ValueError(f"unsupported Choice rule {rule}")
    if not found:
        raise KeyError(f"Choice reads {rule['Variable']}, which the scenario does not set")
    return _COMPARE[ops[0]](value, rule[ops[0]])


def walk(
    asl: dict[str, Any],
    task_results: dict[str, Any],
    substitutions: dict[str, str],
    max_states: int = 200,
) -> list[str]:
    """Every state entered, StartAt first, the terminal state last (no errors, no retries).

    ``task_results`` is what a Task state returns (by state name); Pass states
    apply their Result/Parameters, Choice states are evaluated for real.
    """
    doc: dict[str, Any] = {}
    name, path = asl["StartAt"], []
    while len(path) < max_states:
        state = asl["States"][name]
        path.append(name)
        kind = state["Type"]
        if kind in ("Succeed", "Fail"):
            return path
        if kind == "Choice":
            chosen = [c["Next"] for c in state["Choices"] if evaluate(c, doc)]
            if not chosen and "Default" not in state:
                raise RuntimeError(f"{name}: States.NoChoiceMatched")
            name = chosen[0] if chosen else state["Default"]
            continue
        if kind == "Pass":
            if "Result" in state or "Parameters" in state:
                result = state.get("Result", state.get("Parameters"))
                doc = _set(doc, state.get("ResultPath", "$"), _fill(result, substitutions, doc))
        elif kind == "Task":
            result = task_results.get(name, {})
            if "ResultSelector" in state:  # e.g. Record Audit adds the webhook switch
                result = _fill(state["ResultSelector"], substitutions, result)
            doc = _set(doc, state.get("ResultPath", "$"), result)
        else:
            raise ValueError(f"{name}: state type {kind} is not modelled")
        if state.get("End"):
            return path
        name = state["Next"]
    raise RuntimeError(f"no terminal state within {max_states} states: {path[-5:]}")


def scenario_path(asl: dict[str, Any], verdict: str, webhook: bool) -> list[str]:
    """The states one object enters in the deployed variant (with or without the webhook)."""
    return walk(
        statemachines.derive(asl, webhook),
        task_results={"Scan Object": {"verdict": verdict}},
        substitutions={},
    )


def function_of(state: dict[str, Any]) -> str:
    """The Lambda a Task runs: ${ScanObjectFunctionArn} -> scan_object, or an ARN's name."""
    resource = state["Resource"]
    placeholder = re.fullmatch(r"\$\{(\w+)FunctionArn\}", resource)
    if placeholder:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", placeholder.group(1)).lower()
    if ":function:" in resource:
        return resource.split(":function:")[1].split(":")[0]
    raise ValueError(f"cannot tell which Lambda {resource!r} is")


# ---------------------------------------------------------------- the prices


def price(key: str) -> float:
    return float(PRICES["items"][key]["usd"])


def _lambda_cost(fn: dict[str, Any], invocations: float, ms: float) -> dict[str, float]:
    billed_s = math.ceil(ms) / 1000  # billed in 1 ms steps
    extra_gb = max(0, fn.get("ephemeral_mb", 512) - WORKLOAD["free_ephemeral_mb"]) / 1024
    return {
        "requests": invocations * price("lambda_request"),
        "duration": invocations * fn["memory_mb"] / 1024 * billed_s * price("lambda_gb_second_x86"),
        "ephemeral": invocations * extra_gb * billed_s * price("lambda_ephemeral_gb_second"),
    }


def scanner_ms(size: int) -> float:
    fn = WORKLOAD["functions"]["scan_object"]
    return fn["ms"] + 1000 * size / (fn["mib_per_s"] * MIB)


WORKFLOWS = ("standard", "express")


def workflow_cost(
    path: list[str], task_ms: float, workflow: str, execution_data: bool = True
) -> dict[str, float]:
    """What Step Functions itself bills for one execution on ``path``."""
    ex = WORKLOAD["express"]
    # Both machines log every event (level ALL) to CloudWatch Logs; Standard always
    # with its data, Express unless EXPRESS_LOG_EXECUTION_DATA=false.
    log_bytes = ex["log_bytes"]["execution_data" if execution_data else "no_execution_data"]
    logs = (
        log_bytes
        * len(path)  # each state entered writes its events (a Task's: five)
        / ex["log_bytes_states"]
        / GIB
        * price("cloudwatch_logs_ingestion_gb")
    )
    if workflow == "standard":
        return {
            "Step Functions transitions": len(path) * price("sfn_standard_transition"),
            "CloudWatch Logs ingestion": logs,
        }
    billed_s = math.ceil(task_ms / 100) / 10  # 100 ms steps
    return {
        "Step Functions Express requests": price("sfn_express_request"),
        "Step Functions Express duration": ex["memory_mb"]
        / 1024
        * billed_s
        * price("sfn_express_gb_second"),
        "CloudWatch Logs ingestion": logs,
    }


def per_object(
    asl: dict[str, Any],
    size: int,
    verdict: str,
    webhook: bool,
    workflow: str = "standard",
    execution_data: bool = True,
) -> dict[str, Any]:
    """Dollars for one object of ``size`` bytes, by component, on the scenario's path."""
    path = scenario_path(asl, verdict, webhook)
    functions = WORKLOAD["functions"]
    batch = WORKLOAD["sqs_batch_size"]
    lam = [_lambda_cost(functions["start_scan"], 1 / batch, functions["start_scan"]["ms"])]
    invoked: dict[str, int] = {}
    gets = puts = 0
    task_ms = 0.0
    for name in path:
        state = asl["States"][name]
        if state["Type"] == "Task":
            fn_name = function_of(state)
            invoked[fn_name] = invoked.get(fn_name, 0) + 1
            fn = functions[fn_name]
            ms = scanner_ms(size) if fn_name == "scan_object" else fn["ms"]
            task_ms += ms + WORKLOAD["express"]["invoke_overhead_ms"]
            lam.append(_lambda_cost(fn, 1, ms))
        s3 = WORKLOAD["s3_requests_by_state"].get(name, {})
        parts = max(1, math.ceil(size / WORKLOAD["part_bytes"]))
        gets += s3.get("get", 0) + s3.get("get_per_part", 0) * parts
        gets += s3.get("get_if_multipart", 0) if parts > 1 else 0
        puts += s3.get("put", 0)
    sqs_requests = 1 + 2 / batch  # SendMessage (from S3) + ReceiveMessage + DeleteMessageBatch
    components = {
        **workflow_cost(path, task_ms, workflow, execution_data),
        "Lambda requests": sum(c["requests"] for c in lam),
        "Lambda duration (GB-s)": sum(c["duration"] for c in lam),
        "Lambda ephemeral storage": sum(c["ephemeral"] for c in lam),
        "SQS requests": sqs_requests * price("sqs_standard_request"),
        "DynamoDB writes": WORKLOAD["dynamodb_wru_per_object"] * price("dynamodb_on_demand_wru"),
        "S3 requests": gets * price("s3_get_and_other") + puts * price("s3_put_copy_post_list"),
    }
    return {
        "size_bytes": size,
        "verdict": verdict,
        "webhook": webhook,
        "workflow": workflow,
        "transitions": len(path),
        "path": path,
        "lambda_invocations": {"start_scan": 1 / batch, **invoked},
        "s3_requests": {"get_tier": gets, "put_tier": puts},
        "sqs_requests": sqs_requests,
        "components": components,
        "total": sum(components.values()),
    }


def guardduty_per_object(size: int) -> dict[str, Any]:
    s3 = WORKLOAD["guardduty_s3_requests"]
    components = {
        "GuardDuty objects evaluated": price("guardduty_s3_object_evaluated"),
        "GuardDuty data scanned": size / GIB * price("guardduty_s3_gb_scanned"),
        "S3 requests (GuardDuty's GET + tag)": s3["get"] * price("s3_get_and_other")
        + s3["put"] * price("s3_put_copy_post_list"),
    }
    return {"size_bytes": size, "components": components, "total": sum(components.values())}


def fixed_monthly() -> dict[str, float]:
    up = WORKLOAD["updater"]
    runs = up["runs_per_month"]
    lam = _lambda_cost(up, runs, up["seconds"] * 1000)
    return {
        "Definitions updater (Lambda)": sum(lam.values()),
        "Definitions tarball (S3 Standard)": WORKLOAD["tarball_mb"]
        / 1024
        * price("s3_standard_gb_month"),
    }


# ---------------------------------------------------------------- output


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*([\d.]+)\s*(B|KB|KIB|MB|MIB|GB|GIB)?\s*", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 100KB, 1MB, 10MB)")
    unit = {"KB": KIB, "KIB": KIB, "MB": MIB, "MIB": MIB, "GB": GIB, "GIB": GIB}
    return int(float(match.group(1)) * unit.get(match.group(2) or "B", 1))


def label(size: int) -> str:
    for unit, name in ((GIB, "GB"), (MIB, "MB"), (KIB, "KB")):
        if size >= unit:
            return f"{size / unit:.3g} {name}"
    return f"{size} B"


def break_even(asl: dict[str, Any], verdict: str, webhook: bool, **model: Any) -> int | None:
    """The object size below which GuardDuty costs less, or None if it never does (up to 5 GB)."""

    def gap(size: int) -> float:
        return (
            per_object(asl, size, verdict, webhook, **model)["total"]
            - guardduty_per_object(size)["total"]
        )

    low, high = 1, 5 * GIB
    if gap(low) <= 0:
        return None
    if gap(high) > 0:
        return high
    while high - low > KIB:
        mid = (low + high) // 2
        low, high = (mid, high) if gap(mid) > 0 else (low, mid)
    return high


def report(
    asl: dict[str, Any],
    sizes: list[int],
    verdict: str,
    webhook: bool,
    workflow: str = "standard",
    execution_data: bool = True,
) -> dict[str, Any]:
    model = {"workflow": workflow, "execution_data": execution_data}
    rows = []
    for size in sizes:
        ours, gd = per_object(asl, size, verdict, webhook, **model), guardduty_per_object(size)
        rows.append(
            {
                "size_bytes": size,
                "ours": {k: v * 1e6 for k, v in ours["components"].items()}
                | {"total": ours["total"] * 1e6},
                "guardduty": {k: v * 1e6 for k, v in gd["components"].items()}
                | {"total": gd["total"] * 1e6},
                "ours_per_gb": ours["total"] / (size / GIB),
                "guardduty_per_gb": gd["total"] / (size / GIB),
            }
        )
    paths = {name: scenario_path(asl, v, w) for name, (v, w) in SCENARIOS.items()}
    return {
        "region": PRICES["region"],
        "workflow": workflow,
        "express_execution_data": execution_data if workflow == "express" else None,
        "prices": PRICES["items"],
        "workload": WORKLOAD,
        "transitions": {name: {"count": len(p), "path": p} for name, p in paths.items()},
        "scenario": {"verdict": verdict, "webhook": webhook},
        "per_million_objects": rows,
        "scenario_totals_per_million": {
            name: {label(s): per_object(asl, s, v, w, **model)["total"] * 1e6 for s in sizes}
            for name, (v, w) in SCENARIOS.items()
        },
        "guardduty_cheaper_below_bytes": {
            name: break_even(asl, v, w, **model) for name, (v, w) in SCENARIOS.items()
        },
        "fixed_monthly": fixed_monthly(),
    }


def _row(name: str, values: list[float], fmt: str = "${:,.2f}", bold: bool = False) -> str:
    cells = [fmt.format(v) for v in values]
    if bold:
        name, cells = f"**{name}**", [f"**{c}**" for c in cells]
    return f"| {name} | " + " | ".join(cells) + " |"


def markdown(rep: dict[str, Any]) -> str:
    rows = rep["per_million_objects"]
    sizes = [label(r["size_bytes"]) for r in rows]
    head = ["| | " + " | ".join(sizes) + " |", "|---|" + "---:|" * len(sizes)]
    workflow = rep["workflow"].capitalize()
    if rep["workflow"] == "express":
        workflow += (
            f" (logs {'with' if rep['express_execution_data'] else 'without'} execution data)"
        )
    out = [
        f"{workflow} workflow, region {rep['region']}, list prices, USD. "
        "KB/MB/GB are binary (KiB/MiB/GiB).",
        "",
    ]
    out += ["State transitions (states entered, start and terminal state included):", ""]
    out += ["| scenario | transitions | path |", "|---|---:|---|"]
    for name, t in rep["transitions"].items():
        out.append(f"| {name} | {t['count']} | {' > '.join(t['path'])} |")
    sc = rep["scenario"]
    scenario = f"{sc['verdict']}, webhook {'on' if sc['webhook'] else 'off'}"
    out += ["", f"Per million objects ({scenario}):", "", *head]
    for side, title in (("ours", "this scanner, total"), ("guardduty", "GuardDuty, total")):
        for key in rows[0][side]:
            if key != "total":
                out.append(_row(key, [r[side][key] for r in rows]))
        out.append(_row(title, [r[side]["total"] for r in rows], bold=True))
    out += ["", "Per GB scanned:", "", *head]
    out.append(_row("this scanner", [r["ours_per_gb"] for r in rows], "${:,.4f}"))
    out.append(_row("GuardDuty", [r["guardduty_per_gb"] for r in rows], "${:,.4f}"))
    out += ["", "This scanner, total per million objects, by scenario:", "", *head]
    for name, totals in rep["scenario_totals_per_million"].items():
        out.append(_row(name, list(totals.values())))
    out += ["", "GuardDuty is cheaper for objects smaller than:", ""]
    for name, size in rep["guardduty_cheaper_below_bytes"].items():
        out.append(f"- {name}: {label(size) if size else 'never (this scanner is cheaper)'}")
    out += ["", "Fixed, per month, whatever the volume:", "", "| item | USD |", "|---|---:|"]
    out += [f"| {k} | ${v:,.2f} |" for k, v in rep["fixed_monthly"].items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, action="append", help="object size, repeatable")
    parser.add_argument("--verdict", choices=["clean", "infected", "unscannable"], default="clean")
    parser.add_argument("--webhook", action="store_true", help="a webhook is configured")
    parser.add_argument("--asl", type=Path, default=ASL_PATH, help="the state machine definition")
    parser.add_argument("--json", action="store_true", help="JSON instead of markdown")
    parser.add_argument("--workflow", choices=WORKFLOWS, default="standard")
    parser.add_argument(
        "--no-execution-data",
        action="store_true",
        help="(express) logs without inputs and outputs (EXPRESS_LOG_EXECUTION_DATA=false)",
    )
    args = parser.parse_args(argv)
    if args.no_execution_data and args.workflow != "express":
        parser.error("--no-execution-data goes with --workflow express")
    rep = report(
        load_asl(args.asl),
        args.size or list(DEFAULT_SIZES),
        args.verdict,
        args.webhook,
        workflow=args.workflow,
        execution_data=not args.no_execution_data,
    )
    sys.stdout.write(json.dumps(rep, indent=2) + "\n" if args.json else markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
