"""The app synthesized once per test run, as a user does it: `npx cdk synth` (tests/synth.py)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests import synth
from tests.synth import (  # noqa: F401 - the values the tests compare with
    ACCOUNT,
    ADMIN_ARN,
    BUS_ARN,
    EVERYTHING,
    EXPRESS,
    INVENTORY_ARN,
    KMS_KEY_ARN,
    MINIMAL,
    QUARANTINE_ARN,
    QUARANTINE_KMS_ARN,
    REGION,
    SECRET_ARN,
    SOURCE_ARN,
    TOPIC_ARN,
)

REPO = Path(__file__).resolve().parents[2]


def run_app(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """`python app.py` in a clean environment: only for configuration errors, which
    stop before the CDK is loaded (the CLI adds one line of its own to them)."""
    return subprocess.run(
        [sys.executable, str(REPO / "app.py")],
        cwd=cwd,
        env=synth.clean_environment(cwd, {"CDK_OUTDIR": str(cwd / "cdk.out"), **env}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="session")
def synths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = synth.shared_root(tmp_path_factory.getbasetemp())
    with ThreadPoolExecutor(len(synth.VARIANTS)) as pool:
        variants = {name: pool.submit(synth.variant, name, root) for name in synth.VARIANTS}
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
