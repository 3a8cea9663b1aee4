"""The warm engine's own promises: it never writes into a definitions set, and a
clamd that stopped detecting is caught before anything is called clean."""

from __future__ import annotations

import shutil

import pytest

from functions.scan_object.engine import ClamdEngine, Limits
from functions.shared.errors import ScanEngineUnavailable
from scanctl import samples

MIB = 1024 * 1024


@pytest.fixture
def engine(tmp_path):
    running = ClamdEngine(tmp_path / "engine", Limits(64 * MIB, 128 * MIB))
    yield running
    running.stop()


def test_the_definitions_directory_is_only_read(engine, signatures):
    before = {p.name: p.read_bytes() for p in signatures.iterdir()}

    engine.ensure("v1", signatures)

    assert {p.name: p.read_bytes() for p in signatures.iterdir()} == before
    # clamd loaded the set and our canary beside it, from a view of our own.
    eicar = signatures.parent / "eicar.com"
    eicar.write_bytes(samples.EICAR)
    assert engine.scan_file(eicar).found


def test_a_clamd_whose_temp_directory_vanished_fails_the_canary_and_is_stopped(engine, signatures):
    engine.ensure("v1", signatures)
    shutil.rmtree(engine.tmp_dir)  # clamd 1.4 now answers OK to every file

    with pytest.raises(ScanEngineUnavailable, match="canary"):
        engine.check_canary()
    assert not engine.is_alive()

    engine.ensure("v1", signatures)  # the retry's fresh clamd detects again
    engine.check_canary()
