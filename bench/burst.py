"""A burst of uploads against the scanners' concurrency: does every object get scanned?

A discrete-event simulation of what AWS does with a burst (too slow to run
through the harness at 20,000 objects): the starters take the notifications
from the queue and start one execution each; every execution's Scan Object
invokes the scanner, whose reserved concurrency caps how many run at once;
an invocation beyond it is refused by Lambda (``TooManyRequestsException``)
and retried by the state machine as its Retry says (read from the deployed
definition: interval, backoff, cap, attempts, full jitter); past its last
attempt the execution FAILS. A new container's first scan also loads the
database (the cold start).

    .venv/bin/python -m bench.burst                     # the table in docs/capacity.md
    .venv/bin/python -m bench.burst --objects 20000 --scan-s 3.5 --json

Scan times are drawn from a log-normal distribution around the median given
(``--scan-s``, spread ``--spread``): 3.5 s is the issue's figure for 32 MB of
random bytes (BENCHMARKS.md, B7); small objects take a few tens of ms.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

THROTTLED = "Lambda.TooManyRequestsException"


@dataclass(frozen=True)
class Retry:
    interval_s: float
    backoff: float
    max_delay_s: float
    attempts: int

    def wait(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number ``retry`` (1-based): full jitter, as AWS draws it."""
        ceiling = min(self.interval_s * self.backoff ** (retry - 1), self.max_delay_s)
        return rng.uniform(0, ceiling)


def deployed_retry() -> Retry:
    """Scan Object's retrier for Lambda's throttling, from the definition we deploy."""
    import statemachines

    state = statemachines.definition(webhook=False)["States"]["Scan Object"]
    [retrier] = [r for r in state["Retry"] if THROTTLED in r["ErrorEquals"]]
    return Retry(
        interval_s=retrier["IntervalSeconds"],
        backoff=retrier["BackoffRate"],
        max_delay_s=retrier.get("MaxDelaySeconds", math.inf),
        attempts=retrier["MaxAttempts"],
    )


@dataclass
class Burst:
    objects: int = 20_000
    scanners: int = 50  # SCANNER_RESERVED_CONCURRENCY
    starts_per_s: float = 200.0  # 5 starters x 10 records, ~25 ms a StartExecution
    scan_s: float = 3.5  # median scan step
    spread: float = 0.5  # sigma of the log-normal
    cold_s: float = 15.0  # a new container loads the official database
    seed: int = 1


def simulate(burst: Burst, retry: Retry) -> dict[str, Any]:
    rng = random.Random(burst.seed)
    mu = math.log(burst.scan_s)
    events: list[tuple[float, int, str, int]] = []  # (time, seq, kind, execution)
    seq = 0

    def push(when: float, kind: str, execution: int) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (when, seq, kind, execution))

    for i in range(burst.objects):
        push(i / burst.starts_per_s, "attempt", i)
    retries = [0] * burst.objects
    started_at = [i / burst.starts_per_s for i in range(burst.objects)]
    busy, warm, failed, done = 0, 0, 0, 0
    last_end, longest_wait, attempts = 0.0, 0.0, 0
    while events:
        now, _, kind, execution = heapq.heappop(events)
        if kind == "end":
            busy -= 1
            done += 1
            last_end = now
            continue
        attempts += 1
        if busy >= burst.scanners:
            retries[execution] += 1
            if retries[execution] > retry.attempts:
                failed += 1
                continue
            push(now + retry.wait(retries[execution], rng), "attempt", execution)
            continue
        busy += 1
        longest_wait = max(longest_wait, now - started_at[execution])
        took = rng.lognormvariate(mu, burst.spread)
        if warm < burst.scanners:
            warm += 1
            took += burst.cold_s
        push(now + took, "end", execution)
    return {
        "objects": burst.objects,
        "scanners": burst.scanners,
        "scanS": burst.scan_s,
        "retry": retry.__dict__,
        "scanned": done,
        "failed": failed,
        "drainedAfterS": round(last_end, 1),
        "longestWaitS": round(longest_wait, 1),
        "throttledAttempts": attempts - done - failed,
        "transitionsPerObject": round(attempts / burst.objects, 2),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| objects | scanners | median scan | retry (attempts, cap) | scanned | FAILED | "
        "drained after | longest wait | throttled attempts per object |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['objects']:,} | {r['scanners']} | {r['scanS']} s | "
            f"{r['retry']['attempts']}, {r['retry']['max_delay_s']:.0f} s | {r['scanned']:,} | "
            f"{r['failed']:,} | {r['drainedAfterS'] / 60:.0f} min | "
            f"{r['longestWaitS'] / 60:.0f} min | {r['transitionsPerObject'] - 1:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, nargs="*", default=[4_000, 20_000, 50_000])
    parser.add_argument("--scan-s", type=float, nargs="*", default=[0.5, 3.5])
    parser.add_argument("--scanners", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    retry = deployed_retry()
    rows = [
        simulate(Burst(objects=n, scan_s=s, scanners=args.scanners), retry)
        for s in args.scan_s
        for n in args.objects
    ]
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0 if all(r["failed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
