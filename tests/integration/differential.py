"""What the every-byte tests share: the tools, and how a case is judged.

A case counts only if an independent extractor gets the EICAR file (or
ClamAV's test file) out of it: that is the oracle, not a model of what ClamAV
reads. It then goes through the pipeline with real clamd and must come out
``infected``; where clamd alone (the ``engine`` fixture, in conftest.py)
misses it, it must be our second pass that found it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scanctl import samples

EICAR = samples.EICAR


def run(*command: str, data: bytes | None = None, cwd: Path | None = None) -> bytes:
    return subprocess.run(
        command, input=data, capture_output=True, check=True, cwd=cwd, timeout=60
    ).stdout


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs it")
    return path


def check_case(harness, engine, tmp_path, name, make, oracle) -> None:
    data = make(tmp_path)
    path = tmp_path / name
    path.write_bytes(data)

    # GIVEN a file an ordinary extractor gets EICAR (or ClamAV's test file) out of
    out = oracle(path, tmp_path)
    assert EICAR in out or samples.CLAM_EXE.read_bytes() in out, "no extractor gets it out"

    # WHEN it is uploaded
    scan = harness.scan(f"every-byte/{name}", data).output["scan"]

    # THEN it is infected: by ClamAV's own reading, or ours
    assert scan["verdict"] == "infected", scan
    if not engine.scan_file(path).found:
        assert scan["foundBy"] == "unpack", scan
