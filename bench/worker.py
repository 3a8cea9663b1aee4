"""The scanner in its own process, as in Lambda: measured from the inside.

Run by bench/run.py with the emulated AWS on a loopback moto server
(AWS_ENDPOINT_URL), so this process holds only the scanner, not the emulator:
its peak RSS is the scanner's own. Reads a JSON plan on stdin, writes JSON
results on stdout.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def peak_rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


def context(name: str) -> Any:
    from scanctl.harness import LambdaContext

    return LambdaContext(function_name=name)


def invoke(app: Any, event: dict[str, Any]) -> dict[str, Any]:
    """One invocation as Lambda's runtime makes it, with a trace header of its own.

    Sampled: the dearer case. Lambda samples the first request each second and
    5% of the rest, so a cold start is usually traced, a busy warm one seldom.
    The header goes afterwards: what the worker scans outside an invocation
    (B7) is not traced.
    """
    os.environ["_X_AMZN_TRACE_ID"] = (
        f"Root=1-{int(time.time()):08x}-{os.urandom(12).hex()};"
        f"Parent={os.urandom(8).hex()};Sampled=1"
    )
    try:
        return app.lambda_handler(event, context("scan_object"))
    finally:
        del os.environ["_X_AMZN_TRACE_ID"]


def main() -> None:
    plan = json.load(sys.stdin)
    results: dict[str, Any] = {"objects": {}}

    # B4: from a scanner with nothing on disk to its first verdict.
    started = time.perf_counter()
    from functions.scan_object import app

    imported = time.perf_counter()
    first = plan["objects"][0]
    event = {"object": first["object"], "definitions": plan["definitions"]}
    result = invoke(app, event)
    results["cold_start_s"] = time.perf_counter() - started
    results["cold_verdict"] = result["verdict"]
    scanner = app.get_scanner()
    engine = scanner.engine
    results["cold_start_phases"] = {
        **scanner.store.last_fetch,
        "clamd_load_s": engine.last_load_s,
        "import_s": imported - started,
    }
    results["clamd_pid"] = engine.process.pid
    results["engine_version"] = engine.engine_version
    if plan.get("cold_start_only"):  # one more B4 sample, in a process of its own
        app.reset_scanner()
        print(json.dumps(results))
        return

    # B7 on a clamd of its own without clamd's cache of clean files' hashes:
    # every repeat really scans (the production engine scans each object once).
    from functions.scan_object.engine import ClamdEngine
    from functions.scan_object.scanner import Scanner
    from functions.shared.contracts import DefinitionsRef, ObjectRef

    uncached = ClamdEngine(Path(plan["work"]) / "b7-engine", engine.limits, cache=False)
    uncached.ensure(engine.loaded_version, scanner.store.directory(engine.loaded_version))
    measuring = Scanner(scanner.s3, scanner.settings, engine=uncached)

    repeats = plan["repeats"]
    for spec in plan["objects"]:
        event = {"object": spec["object"], "definitions": plan["definitions"]}
        invoke(app, event)  # warm this object's path once
        times, inside, rss = [], [], []
        for _ in range(repeats):
            reset_peak_rss()
            t0 = time.perf_counter()
            out = invoke(app, event)
            times.append(time.perf_counter() - t0)
            inside.append(out["durationMs"] / 1000)
            rss.append(peak_rss_mib())
        entry = {
            "verdict": out["verdict"],
            "handler_s": statistics.median(times),
            "scan_result_s": statistics.median(inside),
            "peak_rss_mib": max(rss),
        }
        local = spec.get("local_path")
        if local:
            # B7: clamd's own scan of the file alone, against what the scanner does
            # (clamd's scan and our second pass side by side), and the second
            # pass alone.
            first, both, second = [], [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                uncached.scan_file(Path(local))
                first.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                _, deep = measuring.scan_local(Path(local))
                both.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                measuring.second_pass(Path(local))
                second.append(time.perf_counter() - t0)
            entry["first_pass_s"] = statistics.median(first)
            entry["both_passes_s"] = statistics.median(both)
            entry["second_pass_s"] = statistics.median(second)
            # The scan step as a whole (HEAD, GET, clamd, and the second pass or
            # not), the figure the second pass must not slow down much.
            obj = ObjectRef.from_dict(spec["object"])
            refs = DefinitionsRef.from_dict(plan["definitions"])
            with_pass, without = [], []
            # A small object's scan step is a few milliseconds, where the machine's
            # jitter is as large as what is measured: many more repeats there.
            small_object = Path(local).stat().st_size <= 1024 * 1024

            def timed_scan(second_pass: bool, obj: Any = obj, refs: Any = refs) -> float:
                if not second_pass:
                    measuring.second_pass = lambda path, known=False: None  # type: ignore[method-assign]
                try:
                    t0 = time.perf_counter()
                    measuring.scan(obj, refs)
                    return time.perf_counter() - t0
                finally:
                    if not second_pass:
                        del measuring.second_pass

            for i in range(max(repeats, 31) if small_object else repeats):
                # Alternate which goes first: a pair's first scan is not favoured.
                for second_pass in (True, False) if i % 2 == 0 else (False, True):
                    (with_pass if second_pass else without).append(timed_scan(second_pass))
            entry["scan_step_s"] = statistics.median(with_pass)
            entry["scan_step_without_second_pass_s"] = statistics.median(without)
            entry["archive"] = spec["archive"]
            entry["unpacked"] = deep.summary if deep is not None else None
        if local and spec.get("engine_compare"):
            # B2: our engine call against clamdscan --fdpass, same clamd, same file.
            ours, theirs = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                engine.scan_file(Path(local))
                ours.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                subprocess.run(
                    [
                        "clamdscan",
                        "--fdpass",
                        "--no-summary",
                        f"--config-file={engine.config_path}",
                        local,
                    ],
                    capture_output=True,
                    check=False,
                )
                theirs.append(time.perf_counter() - t0)
            entry["engine_s"] = statistics.median(ours)
            entry["clamdscan_fdpass_s"] = statistics.median(theirs)
        results["objects"][spec["name"]] = entry

    results["clamd_peak_rss_mib"] = peak_rss_mib(engine.process.pid)
    results["worker_pid"] = os.getpid()
    engine.stop()
    uncached.stop()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
