"""The benchmark code runs (small), so it cannot rot. It asserts shape, never speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KEYS = {
    "ratio_vs_clamscan_small",
    "overhead_vs_clamd_large",
    "rss_growth_mib",
    "cold_start_ratio",
    "pipeline_objects_per_s",
}


def test_quick_benchmark_writes_results_and_report(tmp_path):
    results, report = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--signatures",
            "2000",
            "--body-signatures",
            "200",
            "--repeats",
            "1",
            "--pipeline-objects",
            "5",
            "--work",
            str(tmp_path / "work"),
            "--results",
            str(results),
            "--report",
            str(report),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(results.read_text())
    assert set(data) >= KEYS
    for key in KEYS:
        assert data[key] > 0, key
    assert data["b1_latency"]["eicar"]["ratio"] > 0
    assert data["b5_pipeline"]["succeeded"] == 5
    assert data["database"]["hash_signatures"] == 2001
    assert "ClamAV" in data["clamav"]
    text = report.read_text()
    for section in ("## Targets", "## B1", "## B2", "## B3", "## B4", "## B5"):
        assert section in text
