"""Who makes each AWS call: the function or state machine a thread acts for.

In AWS every function and state machine calls with its own role; here they
share one process. The invoker (a function), moto's execution workers (a
state machine), and the emulations of what AWS does with a role of ours (the
SQS event source polls with the starter's role, Lambda's on-failure
destination sends with the recorder's, a Distributed Map lists with the
Rescan machine's) each say whom they act for with ``acting_as``; threads and
thread pools started while acting carry it along (``carried_into_threads``).

``recording(calls)`` then records every botocore call made on someone's
behalf, with what an IAM evaluation of it needs: the tests check each one
against the synthesized template's policies (tests/iamcheck). Calls made on
nobody's behalf (the harness setting up, a test uploading) are not recorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

FUNCTION = "function"
STATE_MACHINE = "stateMachine"


@dataclass(frozen=True)
class Principal:
    kind: str  # FUNCTION or STATE_MACHINE
    name: str  # the folder under functions/, or the state machine's name

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass
class AwsCall:
    """One API call as IAM sees it: who, what, and the request's facts."""

    principal: Principal
    service: str  # botocore's name: s3, sqs, stepfunctions...
    operation: str  # CopyObject, SendMessage...
    params: dict[str, Any]
    region: str
    # S3 object calls: the tags the object version had when the call was made
    # (s3:ExistingObjectTag/<key> in a bucket policy's conditions).
    existing_tags: dict[str, str] | None = None
    synthetic: bool = False  # made by an emulation of AWS, not by a boto3 client
    facts: dict[str, Any] = field(default_factory=dict)


_acting: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("acting", default=None)
# Open recordings, innermost last: a call goes to the innermost one only (two
# harnesses open at once must not each see the other's calls).
_recorders: list[Callable[[AwsCall], None]] = []
_lock = threading.Lock()
_original_make_api_call: Any = None


def current() -> Principal | None:
    return _acting.get()


@contextlib.contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    token = _acting.set(principal)
    try:
        yield
    finally:
        _acting.reset(token)


def record(call: AwsCall) -> None:
    """An emulation's call on someone's behalf (no boto3 client made it)."""
    with _lock:
        recorder = _recorders[-1] if _recorders else None
    if recorder is not None:
        recorder(call)


@contextlib.contextmanager
def carried_into_threads() -> Iterator[None]:
    """A thread, or a pool's task, acts for whoever started it.

    Python 3.11 starts threads with an empty context; without this, a ranged
    download in the scanner's pool or an execution's worker thread would act
    for nobody.
    """
    thread_start = threading.Thread.start
    submit = ThreadPoolExecutor.submit

    def start(self: threading.Thread) -> None:
        context = contextvars.copy_context()
        run = self.run
        self.run = lambda: context.run(run)  # type: ignore[method-assign]
        thread_start(self)

    def submit_in_context(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return submit(self, contextvars.copy_context().run, fn, *args, **kwargs)

    threading.Thread.start = start  # type: ignore[method-assign]
    ThreadPoolExecutor.submit = submit_in_context  # type: ignore[method-assign]
    try:
        yield
    finally:
        threading.Thread.start = thread_start  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]


@contextlib.contextmanager
def state_machines_act_for_themselves() -> Iterator[None]:
    """An execution's tasks call AWS with its state machine's role.

    moto's execution worker starts a thread of its own (from the thread that
    called StartExecution: the starter, say); the worker is started acting
    for the state machine, so that thread and its tasks' calls are the machine's.
    """
    from moto.stepfunctions.parser.backend.execution_worker import (
        ExecutionWorker,
        SyncExecutionWorker,
    )

    originals = {cls: cls.__dict__["start"] for cls in (ExecutionWorker, SyncExecutionWorker)}

    def wrap(original: Any) -> Any:
        def start(self: Any) -> None:
            name = self._evaluation_details.state_machine_details.name
            with acting_as(Principal(STATE_MACHINE, name)):
                original(self)

        return start

    for cls, original in originals.items():
        cls.start = wrap(original)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.start = original  # type: ignore[method-assign]


@contextlib.contextmanager
def recording(calls: list[AwsCall]) -> Iterator[None]:
    """Every botocore call made on someone's behalf is appended to ``calls``."""
    from botocore.client import BaseClient

    global _original_make_api_call

    def append(call: AwsCall) -> None:
        with _lock:
            calls.append(call)

    with _lock:
        if not _recorders:
            _original_make_api_call = BaseClient._make_api_call
            BaseClient._make_api_call = _recorded  # type: ignore[method-assign]
        _recorders.append(append)
    try:
        yield
    finally:
        with _lock:
            _recorders.remove(append)
            if not _recorders:
                BaseClient._make_api_call = _original_make_api_call  # type: ignore[method-assign]


# What S3 answers for a key or version that is not there: IAM then also
# decides whether the caller may learn that (s3:ListBucket), or gets a 403.
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound"})


def _recorded(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
    principal = _acting.get()
    if principal is None:
        return _original_make_api_call(self, operation_name, api_params)
    call = AwsCall(
        principal=principal,
        service=self.meta.service_model.service_name,
        operation=operation_name,
        params={k: v for k, v in api_params.items() if k != "Body"},
        region=self.meta.region_name,
        existing_tags=_existing_tags(self, api_params),
    )
    if operation_name in ("CopyObject", "UploadPartCopy"):
        call.facts["copySourceTags"] = _existing_tags(self, _copy_source(api_params["CopySource"]))
    record(call)
    try:
        return _original_make_api_call(self, operation_name, api_params)
    except Exception as err:
        code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND:
            call.facts["notFound"] = True
        raise


def _copy_source(source: Any) -> dict[str, Any]:
    """CopySource as Bucket, Key and VersionId (boto3 takes a dict or a string)."""
    from urllib.parse import unquote

    if isinstance(source, dict):
        return source
    path, _, query = str(source).partition("?versionId=")
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    return {"Bucket": bucket, "Key": key, **({"VersionId": query} if query else {})}


def _existing_tags(client: Any, params: dict[str, Any]) -> dict[str, str] | None:
    """The tags of the object version an S3 call names, read from moto's store."""
    if client.meta.service_model.service_name != "s3" or "Key" not in params:
        return None
    from moto.s3.models import s3_backends

    from scanctl.harness.environment import ACCOUNT_ID

    try:
        backend = s3_backends[ACCOUNT_ID]["aws"]
        key = backend.get_object(params["Bucket"], params["Key"], params.get("VersionId"))
        if key is None:
            return None
        tags = backend.get_object_tagging(key)["Tags"]
    except Exception:  # noqa: BLE001 - no such bucket or version: the call will say so
        return None
    return {t["Key"]: t["Value"] for t in tags}
