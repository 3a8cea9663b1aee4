"""Synthesize the app once per session (as a user would: `python app.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE_ARN = "arn:aws:s3:::acme-uploads"
QUARANTINE_ARN = "arn:aws:s3:::acme-quarantine"
KMS_KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
QUARANTINE_KMS_ARN = "arn:aws:kms:eu-west-1:111122223333:key/99999999-12ab-34cd-56ef-1234567890ab"
TOPIC_ARN = "arn:aws:sns:eu-west-1:111122223333:scanner-alarms"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:scanner/webhook-AbCdEf"
ADMIN_ARN = "arn:aws:iam::111122223333:role/storage-admin"
INVENTORY_ARN = "arn:aws:s3:::acme-inventory"
BUS_ARN = "arn:aws:events:eu-west-1:111122223333:event-bus/security"

MINIMAL = {"SOURCE_BUCKET_ARN": SOURCE_ARN}
EVERYTHING = {
    "SOURCE_BUCKET_ARN": SOURCE_ARN,
    "QUARANTINE_BUCKET_ARN": QUARANTINE_ARN,
    "WEBHOOK_URL": "https://hooks.example.com/scan",
    "ENVIRONMENT": "prod",
    "ACCOUNT_ID": "111122223333",
    "REGION": "eu-west-1",
    "SOURCE_BUCKET_KMS_KEY_ARN": KMS_KEY_ARN,
    "QUARANTINE_BUCKET_KMS_KEY_ARN": QUARANTINE_KMS_ARN,
    "WEBHOOK_SECRET_ARN": SECRET_ARN,
    "ALARM_TOPIC_ARN": TOPIC_ARN,
    "DEFINITIONS_UPDATE_SCHEDULE": "rate(1 hour)",
    "SCANNER_MEMORY_MB": "4096",
    "PROTECT_SOURCE_BUCKET": "true",
    "UNSCANNED_READERS": ADMIN_ARN,
    "EVENT_BUS_ARN": BUS_ARN,
}


def run_app(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """`python app.py` in a clean environment (no AWS, no Docker, no .env)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "CDK_")) and k not in MINIMAL | EVERYTHING | EXPRESS
    }
    base.update(
        {
            "AWS_EC2_METADATA_DISABLED": "true",
            "CDK_OUTDIR": str(cwd / "cdk.out"),
            "PYTHONPATH": str(REPO),
            **env,
        }
    )
    return subprocess.run(
        [sys.executable, str(REPO / "app.py")],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _synth(name: str, env: dict[str, str], tmp: Path) -> dict[str, Any]:
    cwd = tmp / name
    cwd.mkdir()
    result = run_app(env, cwd)
    assert result.returncode == 0, result.stderr[-4000:]
    [template] = (cwd / "cdk.out").glob("*.template.json")
    return {"template": json.loads(template.read_text()), "path": template, "stderr": result.stderr}


# WORKFLOW_TYPE=EXPRESS: both machines, small objects to Express.
EXPRESS = {
    "SOURCE_BUCKET_ARN": SOURCE_ARN,
    "WEBHOOK_URL": "https://hooks.example.com/scan",
    "WORKFLOW_TYPE": "EXPRESS",
    "EXPRESS_MAX_OBJECT_MB": "64",
    # And the volume options: the retro-scan, an inventory for rescans.
    "RETROSCAN_AFTER_UPDATE_HOURS": "24",
    "RESCAN_INVENTORY_BUCKET_ARN": INVENTORY_ARN,
}


@pytest.fixture(scope="session")
def synths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("synth")
    with ThreadPoolExecutor(3) as pool:
        variants = {
            name: pool.submit(_synth, name, env, tmp)
            for name, env in (
                ("minimal", MINIMAL),
                ("everything", EVERYTHING),
                ("express", EXPRESS),
            )
        }
        return {name: future.result() for name, future in variants.items()}


@pytest.fixture(scope="session")
def minimal(synths) -> dict[str, Any]:
    return synths["minimal"]["template"]


@pytest.fixture(scope="session")
def everything(synths) -> dict[str, Any]:
    return synths["everything"]["template"]


@pytest.fixture(scope="session")
def express(synths) -> dict[str, Any]:
    return synths["express"]["template"]
