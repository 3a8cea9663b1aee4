"""The local execution harness: the whole pipeline on this machine.

AWS is emulated by moto; moto's Step Functions interpreter runs the real
``statemachines/scan_object.asl.json``; its Lambda tasks are routed to the real
handlers in-process (moto would otherwise start a Docker container per call);
ClamAV is the real clamd. Retry intervals are recorded instead of slept, so a
retried execution takes milliseconds and the tests can still see the waits.

One module per job:

- ``environment``: the process environment the handlers see, as the stack sets it;
- ``resources``: the buckets, queues, table, functions and state machine in moto;
- ``seams``: the patches of moto's private APIs (moto is pinned exactly for them);
- ``invoker``: in-process Lambda invocations, one at a time per function, and
  injected faults;
- ``driver``: ``LocalScanner``, which wires the above together: uploads,
  drains the queue through ``start_scan``, follows executions;
- ``reports``: what an execution did, read back from its history.
"""

from scanctl.harness.driver import HarnessOptions, LocalScanner
from scanctl.harness.invoker import LambdaContext
from scanctl.harness.reports import ExecutionReport, read_report

__all__ = ["ExecutionReport", "HarnessOptions", "LambdaContext", "LocalScanner", "read_report"]
