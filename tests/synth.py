"""Synthesize the app as a user does: `npx cdk synth`, the CDK CLI, `cdk.json`'s context.

The CLI passes `cdk.json`'s context (partition literals, feature flags) and a
default region to the app, and judges cdk-nag's findings itself. `python
app.py` does neither, so a template it writes is not the one `cdk deploy`
ships. Every template the tests read comes from here.

Each synthesis runs in a directory of its own holding a copy of `cdk.json`
and a link to `app.py`: the app reads `.env` from its working directory, and
a developer's `.env` must not change what the tests see. The environment is
clean: no AWS credentials or configuration (the CLI then uses its default
region, us-east-1, and no account), no user settings (`HOME` is the
directory), no telemetry, notices or version check (no network).

Several pytest-xdist workers may ask for the same variant; the first
synthesizes it under a file lock and the others read its result.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CDK = REPO / "node_modules" / ".bin" / "cdk"

# The variants the tests read. MINIMAL names no account or region (the CLI then
# passes its default region and, without credentials, no account); EVERYTHING
# names both, and turns on every option.
SOURCE_ARN = "arn:aws:s3:::acme-uploads"
QUARANTINE_ARN = "arn:aws:s3:::acme-quarantine"
KMS_KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
QUARANTINE_KMS_ARN = "arn:aws:kms:eu-west-1:111122223333:key/99999999-12ab-34cd-56ef-1234567890ab"
TOPIC_ARN = "arn:aws:sns:eu-west-1:111122223333:scanner-alarms"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:scanner/webhook-AbCdEf"
ADMIN_ARN = "arn:aws:iam::111122223333:role/storage-admin"
INVENTORY_ARN = "arn:aws:s3:::acme-inventory"
BUS_ARN = "arn:aws:events:eu-west-1:111122223333:event-bus/security"
ACCOUNT = "111122223333"
REGION = "eu-west-1"
CLI_DEFAULT_REGION = "us-east-1"

MINIMAL = {"SOURCE_BUCKET_ARN": SOURCE_ARN}
EVERYTHING = {
    "SOURCE_BUCKET_ARN": SOURCE_ARN,
    "QUARANTINE_BUCKET_ARN": QUARANTINE_ARN,
    "WEBHOOK_URL": "https://hooks.example.com/scan",
    "ENVIRONMENT": "prod",
    "ACCOUNT_ID": ACCOUNT,
    "REGION": REGION,
    "SOURCE_BUCKET_KMS_KEY_ARN": KMS_KEY_ARN,
    "QUARANTINE_BUCKET_KMS_KEY_ARN": QUARANTINE_KMS_ARN,
    "WEBHOOK_SECRET_ARN": SECRET_ARN,
    "ALARM_TOPIC_ARN": TOPIC_ARN,
    "DEFINITIONS_UPDATE_SCHEDULE": "rate(1 hour)",
    "SCANNER_MEMORY_MB": "4096",
    "PROTECT_SOURCE_BUCKET": "true",
    "UNSCANNED_READERS": ADMIN_ARN,
    "EVENT_BUS_ARN": BUS_ARN,
    "RETROSCAN_AFTER_UPDATE_HOURS": "24",
}
# WORKFLOW_TYPE=EXPRESS: both machines, small objects to Express; and the
# volume options (the retro-scan, an inventory for rescans).
EXPRESS = {
    "SOURCE_BUCKET_ARN": SOURCE_ARN,
    "QUARANTINE_BUCKET_ARN": QUARANTINE_ARN,
    "WEBHOOK_URL": "https://hooks.example.com/scan",
    "WORKFLOW_TYPE": "EXPRESS",
    "EXPRESS_MAX_OBJECT_MB": "64",
    "RETROSCAN_AFTER_UPDATE_HOURS": "24",
    "RESCAN_INVENTORY_BUCKET_ARN": INVENTORY_ARN,
}
VARIANTS = {"minimal": MINIMAL, "everything": EVERYTHING, "express": EXPRESS}


def clean_environment(home: Path, env: dict[str, str]) -> dict[str, str]:
    """The process environment of a user's shell with only ``env`` configured."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if k in ("LANG", "LC_ALL", "TMPDIR", "TERM", "PYTHONDONTWRITEBYTECODE")
    }
    return {
        **keep,
        # `. .venv/bin/activate`: cdk.json's "python3 app.py" is the venv's Python.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "HOME": str(home),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "CDK_DISABLE_VERSION_CHECK": "true",
        # jsii's banner about Node 20's end of life, once per synth (README: Node 22+).
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        **env,
    }


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`npx cdk <args>` in ``cwd``, which gets cdk.json and app.py as a checkout has them."""
    if not CDK.exists():
        raise RuntimeError("the CDK CLI is not installed: run `make test`, which runs `npm ci`")
    cwd.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "cdk.json", cwd / "cdk.json")
    app = cwd / "app.py"
    if not app.exists():
        app.symlink_to(REPO / "app.py")
    return subprocess.run(
        [str(CDK), *args, "--no-notices"],
        cwd=cwd,
        env=clean_environment(cwd, env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def synth(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return run_cli(env, cwd, "synth", "--quiet")


def template_of(cwd: Path) -> tuple[dict[str, Any], Path]:
    [path] = (cwd / "cdk.out").glob("*.template.json")
    return json.loads(path.read_text()), path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shared_root(base: Path) -> Path:
    """The directory pytest-xdist's workers share (their basetemps' parent)."""
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def variant(name: str, root: Path) -> dict[str, Any]:
    """``VARIANTS[name]`` synthesized once per test run: template, its path, stderr."""
    cwd = root / f"synth-{name}"
    done = cwd / "synthesized"
    with _locked(root / f"synth-{name}.lock"):
        if not done.exists():
            shutil.rmtree(cwd, ignore_errors=True)
            result = synth(VARIANTS[name], cwd)
            if result.returncode != 0:
                raise RuntimeError(
                    f"`cdk synth` of the {name} variant exited {result.returncode}:\n"
                    f"{result.stderr[-4000:]}"
                )
            (cwd / "stderr.txt").write_text(result.stderr)
            done.touch()
    template, path = template_of(cwd)
    return {"template": template, "path": path, "stderr": (cwd / "stderr.txt").read_text()}
