"""Lambda invocations, in-process: the real handler, one invocation per function at a time."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from scanctl.harness.principals import FUNCTION, Principal, acting_as


@dataclass
class LambdaContext:
    """What Powertools reads from Lambda's context object."""

    function_name: str
    memory_limit_in_mb: int = 128
    invoked_function_arn: str = ""
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


class Stall(Exception):
    """A fault that makes the invocation slow rather than failed: the handler
    runs after ``seconds``, so a task's TimeoutSeconds can pass first."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"stalled {seconds}s")
        self.seconds = seconds


class Invoker:
    """Runs ``functions.<name>.app.lambda_handler`` as Lambda would.

    One lock per function: a Lambda container runs one invocation at a time,
    and the scanner's warm clamd relies on it. Faults queued with
    ``fail_next`` are raised instead of running the handler.
    """

    def __init__(self) -> None:
        self.function_arns: dict[str, str] = {}
        self.invocations: list[str] = []
        # Decides, per invocation, on a fault to raise instead of running the
        # handler (a fault campaign's plan); None means run it.
        self.chaos: Callable[[str, Any], BaseException | None] | None = None
        # Functions with a reserved concurrency (of 1: invocations beyond it are
        # throttled), and the invocations Lambda refused.
        self.reserved: dict[str, int] = {}
        self.throttled: list[str] = []
        self._faults: dict[str, list[BaseException]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def fail_next(self, function: str, error: BaseException, times: int = 1) -> None:
        with self._guard:
            self._faults.setdefault(function, []).extend([error] * times)

    def clear_faults(self) -> None:
        with self._guard:
            self._faults.clear()

    def _next_fault(self, name: str) -> BaseException | None:
        with self._guard:
            faults = self._faults.get(name)
            return faults.pop(0) if faults else None

    def invoke(self, name: str, event: Any) -> tuple[str, bool]:
        """(payload, is_error) as Lambda's Invoke reports them."""
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        # With a reserved concurrency, an invocation while another runs is refused
        # (429), as Lambda does; without one, it waits its turn.
        if not lock.acquire(blocking=not self.reserved.get(name)):
            self.throttled.append(name)
            error = {
                "errorType": "Lambda.TooManyRequestsException",
                "errorMessage": f"Rate Exceeded: {name} is at its reserved concurrency",
            }
            return json.dumps(error), True
        with _releasing(lock), acting_as(Principal(FUNCTION, name)):
            self.invocations.append(name)
            try:
                fault = self._next_fault(name)
                if fault is None and self.chaos is not None:
                    fault = self.chaos(name, event)
                if isinstance(fault, Stall):
                    time.sleep(fault.seconds)
                elif fault is not None:
                    raise fault
                module = self.handler_module(name)
                result = self.call(module, name, event if event is not None else {})
                return json.dumps(result), False
            except Exception as err:  # noqa: BLE001 - reported to the caller like Lambda does
                payload = {
                    "errorType": type(err).__name__,
                    "errorMessage": str(err),
                    "stackTrace": traceback.format_exception(err)[-3:],
                }
                return json.dumps(payload), True

    @staticmethod
    def handler_module(name: str) -> Any:
        """``functions.<name>.app``, its logs sent to stderr.

        In Lambda a handler's stdout is its log; here stdout belongs to the
        command's results (``scanctl local --json``), so Powertools' JSON log
        lines go to stderr instead.
        """
        module = importlib.import_module(f"functions.{name}.app")
        logger = getattr(module, "logger", None)
        handler = getattr(logger, "registered_handler", None)
        if isinstance(handler, logging.StreamHandler) and handler.stream is not sys.stderr:
            handler.setStream(sys.stderr)
        return module

    def call(self, module: Any, name: str, event: Any) -> Any:
        """The handler itself, with a context; no fault injection, no lock."""
        context = LambdaContext(
            function_name=name, invoked_function_arn=self.function_arns.get(name, "")
        )
        try:
            with acting_as(Principal(FUNCTION, name)):
                return module.lambda_handler(event, context)
        finally:
            # With metrics disabled Powertools never flushes, and at 100 buffered
            # values it prints them anyway: drop them after each invocation.
            metrics = getattr(module, "metrics", None)
            if metrics is not None:
                metrics.clear_metrics()


@contextlib.contextmanager
def _releasing(lock: threading.Lock) -> Iterator[None]:
    """Hold a lock already taken until the block ends."""
    try:
        yield
    finally:
        lock.release()
