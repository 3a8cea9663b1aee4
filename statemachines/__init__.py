"""The scan state machine: the ASL file, its two variants, and the one mapping that fills it.

``scan_object.asl.json`` is the whole machine, webhook included. Without a
webhook the deployed definition drops ``Notify Webhook`` and ends at
``Record Audit``: a state that would only decide on a deploy-time setting
costs a transition (about $25 per million objects) and decides nothing.
``definition()`` derives the variant; the stack (CloudFormation
``DefinitionSubstitutions``) and the local harness both use it and
``substitutions()``, so the definition that runs locally is the one deployed.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

ASL_PATH = Path(__file__).with_name("scan_object.asl.json")
WEBHOOK_STATE = "Notify Webhook"
# The state that hands over to the webhook, and ends the execution without one.
LAST_STATE = "Record Audit"

# Placeholder -> the function (folder under functions/) whose ARN fills it.
FUNCTION_PLACEHOLDERS: dict[str, str] = {
    "FetchDefinitionsFunctionArn": "fetch_definitions",
    "ScanObjectFunctionArn": "scan_object",
    "ApplyVerdictFunctionArn": "apply_verdict",
    "RecordAuditFunctionArn": "record_audit",
    "NotifyWebhookFunctionArn": "notify_webhook",
}
STATE_MACHINE_FUNCTIONS = tuple(FUNCTION_PLACEHOLDERS.values())

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def definition_text() -> str:
    """The file as it is: every state, the webhook's included."""
    return ASL_PATH.read_text()


def definition(webhook: bool) -> dict[str, Any]:
    """The definition to deploy: without a webhook, Record Audit ends it."""
    return derive(json.loads(definition_text()), webhook)


def derive(asl: dict[str, Any], webhook: bool) -> dict[str, Any]:
    """The variant of a full definition (the file's, or a copy a tool changed)."""
    asl = copy.deepcopy(asl)
    if not webhook:
        del asl["States"][WEBHOOK_STATE]
        last = asl["States"][LAST_STATE]
        del last["Next"]
        last["End"] = True
    return asl


def variant_text(webhook: bool) -> str:
    return json.dumps(definition(webhook), indent=2) + "\n"


def functions(webhook: bool) -> tuple[str, ...]:
    """The functions the deployed definition invokes."""
    return tuple(fn for fn in STATE_MACHINE_FUNCTIONS if webhook or fn != "notify_webhook")


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def substitutions(function_arns: dict[str, str], webhook: bool) -> dict[str, str]:
    """Every placeholder's value in the variant, from function name -> ARN."""
    return {
        ph: function_arns[fn]
        for ph, fn in FUNCTION_PLACEHOLDERS.items()
        if fn in functions(webhook)
    }


def render(webhook: bool, function_arns: dict[str, str]) -> str:
    """The variant with every placeholder filled; a missing value is an error."""
    text = variant_text(webhook)
    values = substitutions(function_arns, webhook)
    missing = placeholders(text) - set(values)
    if missing:
        raise KeyError(f"no value for placeholders {sorted(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
