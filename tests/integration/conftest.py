"""Fixtures of the integration tests that need a clamd of their own."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def engine(tmp_path_factory, signatures):
    """A clamd of its own, to show what ClamAV alone says."""
    from functions.scan_object.engine import ClamdEngine, Limits

    clamd = ClamdEngine(tmp_path_factory.mktemp("engine"), Limits(64 * 1024**2, 256 * 1024**2))
    clamd.ensure("test", signatures)
    yield clamd
    clamd.stop()
