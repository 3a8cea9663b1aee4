"""The Rescan machine's Distributed Map, which moto 5.2 cannot run whole.

What AWS does (and this does): the Map reads the source bucket with
ListObjectsV2 under the prefix (every page), cuts the listing into batches of
``MaxItemsPerBatch`` and runs the batch function on each with the
``BatchInput`` the definition builds, the listed objects as ``Items``.

Where it differs: batches run one after another here (AWS runs up to
``MaxConcurrency`` child executions at once), there are no child executions
or Map Run to see, and the S3 Inventory reader is not emulated (moto has no
inventory reports). moto's own interpreter does run a Distributed Map, but
reads one page of the listing only and fails on an empty prefix; the
definition itself is checked offline (structure tests, cfn-lint).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import statemachines
from scanctl.harness import principals


def _map_state(inventory: bool) -> dict[str, Any]:
    states = json.loads(statemachines.rescan_text())["States"]
    return states["Rescan Inventoried Objects" if inventory else "Rescan Listed Objects"]


def run(
    s3: Any,
    bucket: str,
    execution_input: dict[str, Any],
    invoke: Callable[[str, Any], tuple[str, bool]],
    machine_arn: str,
) -> dict[str, Any]:
    """One Rescan execution: list, batch, hand each batch to ``rescan_batch``.

    The listing and the batches act for the Rescan machine (``machine_arn``),
    whose role AWS uses for them: each batch is a child execution of it.
    """
    name = machine_arn.rsplit(":", 1)[-1]
    with principals.acting_as(principals.Principal(principals.STATE_MACHINE, name)):
        return _run(s3, bucket, execution_input, invoke, machine_arn)


def _run(
    s3: Any,
    bucket: str,
    execution_input: dict[str, Any],
    invoke: Callable[[str, Any], tuple[str, bool]],
    machine_arn: str,
) -> dict[str, Any]:
    if execution_input.get("inventory"):
        raise NotImplementedError("the local emulation has no S3 Inventory reports")
    state = _map_state(inventory=False)
    size = state["ItemBatcher"]["MaxItemsPerBatch"]
    batch_input = _fill(state["ItemBatcher"]["BatchInput"], execution_input, bucket)
    totals: dict[str, Any] = {"batches": 0, "listed": 0, "queued": 0, "skipped": {}}
    items: list[dict[str, Any]] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=execution_input.get("prefix") or ""):
        for entry in page.get("Contents", []):
            items.append({k: _plain(v) for k, v in entry.items()})
            if len(items) == size:
                _batch(items, batch_input, invoke, totals, machine_arn)
                items = []
    if items:
        _batch(items, batch_input, invoke, totals, machine_arn)
    return totals


def _batch(
    items: list, batch_input: dict, invoke: Callable, totals: dict[str, Any], machine_arn: str
) -> None:
    # What AWS does with the machine's role for a batch: a child execution of
    # the machine itself, which invokes the batch function.
    region = machine_arn.split(":")[3]
    for service, operation, params in (
        ("stepfunctions", "StartExecution", {"stateMachineArn": machine_arn}),
        ("lambda", "Invoke", {"FunctionName": "rescan-batch"}),
    ):
        principals.record(
            principals.AwsCall(
                principal=principals.current(),  # type: ignore[arg-type]
                service=service,
                operation=operation,
                params=params,
                region=region,
                synthetic=True,
            )
        )
    payload, failed = invoke("rescan_batch", {"Items": items, "BatchInput": batch_input})
    if failed:
        raise RuntimeError(f"a rescan batch failed: {payload}")
    outcome = json.loads(payload)
    totals["batches"] += 1
    totals["listed"] += outcome["listed"]
    totals["queued"] += outcome["queued"]
    for why, count in outcome["skipped"].items():
        totals["skipped"][why] = totals["skipped"].get(why, 0) + count


def _fill(template: dict[str, Any], execution_input: dict[str, Any], bucket: str) -> dict:
    """The BatchInput as Step Functions builds it: ``.$`` keys are paths into the input."""
    out: dict[str, Any] = {}
    for key, value in template.items():
        if key.endswith(".$"):
            out[key[:-2]] = execution_input.get(value.removeprefix("$."))
        else:
            out[key] = value.replace("${SourceBucketName}", bucket)
    return out


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value
