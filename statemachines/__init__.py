"""The scan state machine: the ASL file and the one mapping that fills it.

The stack (CloudFormation ``DefinitionSubstitutions``) and the local harness
both call ``substitutions()``, so the definition that runs locally is the one
that is deployed.
"""

from __future__ import annotations

import re
from pathlib import Path

ASL_PATH = Path(__file__).with_name("scan_object.asl.json")

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
    return ASL_PATH.read_text()


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def substitutions(function_arns: dict[str, str], webhook_configured: bool) -> dict[str, str]:
    """Every placeholder's value, from function name -> ARN and the flags."""
    values = {ph: function_arns[fn] for ph, fn in FUNCTION_PLACEHOLDERS.items()}
    values["WebhookConfigured"] = "true" if webhook_configured else "false"
    return values


def render(values: dict[str, str], text: str | None = None) -> str:
    """The definition with every placeholder filled; a missing value is an error."""
    text = definition_text() if text is None else text
    missing = placeholders(text) - set(values)
    if missing:
        raise KeyError(f"no value for placeholders {sorted(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
