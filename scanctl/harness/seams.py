"""Patches of moto's private APIs, each a context manager.

moto is pinned exactly (requirements-dev.txt) because these reach into it.
Each says what real AWS does that moto 5.2 does not, or what it does wrong.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def route_lambda(invoke: Callable[[str, Any], tuple[str, bool]]) -> Iterator[None]:
    """Lambda invocations run our handler in-process instead of a Docker container."""
    from moto.awslambda.models import LambdaFunction

    def _invoke_lambda(function: Any, event: Any = None) -> tuple[str, bool, str]:
        payload, is_error = invoke(function.function_name.replace("-", "_"), event)
        return payload, is_error, ""

    original = LambdaFunction._invoke_lambda
    LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign]
    try:
        yield
    finally:
        LambdaFunction._invoke_lambda = original  # type: ignore[method-assign]


@contextlib.contextmanager
def record_retry_waits(waits: list[float]) -> Iterator[None]:
    """Retry intervals are recorded, not slept: a retried execution takes milliseconds."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    class _Clock:
        @staticmethod
        def sleep(seconds: float) -> None:
            waits.append(seconds)

    original = retrier_decl.time
    retrier_decl.time = _Clock  # type: ignore[assignment]
    try:
        yield
    finally:
        retrier_decl.time = original


@contextlib.contextmanager
def serialize_asl_parsing() -> Iterator[None]:
    """Parse one definition at a time.

    moto 5.2's ASL Preprocessor keeps its query-language scope stack in a
    class attribute shared by every instance, and each execution parses the
    definition in its own thread: executions started together corrupt each
    other's stack (IndexError) and hang RUNNING. Seen with thousands of
    executions in flight (scanctl local on 10,000 files).
    """
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    original = AmazonStateLanguageParser.parse
    lock = threading.Lock()

    def parse(definition: str) -> Any:
        with lock:
            return original(definition)

    AmazonStateLanguageParser.parse = staticmethod(parse)  # type: ignore[method-assign]
    try:
        yield
    finally:
        AmazonStateLanguageParser.parse = staticmethod(original)  # type: ignore[method-assign]


@contextlib.contextmanager
def complete_s3_events() -> Iterator[None]:
    """Add what real S3 puts in a notification and moto leaves out.

    S3 sends the ``versionId`` of the new version (versioned buckets) and a
    ``sequencer`` that orders events for one key; moto 5.2 sends neither,
    and the scanner relies on both.
    """
    from moto.s3 import notifications

    original = notifications._get_s3_event
    counter = iter(range(1, 1 << 62))

    def get_s3_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> Any:
        event = original(event_name, bucket, key, notification_id)
        obj = event["Records"][0]["s3"]["object"]
        if getattr(bucket, "is_versioned", False) and getattr(key, "version_id", None):
            obj["versionId"] = key.version_id
        obj["sequencer"] = f"{int(time.time() * 1000):012X}{next(counter):08X}"
        return event

    notifications._get_s3_event = get_s3_event
    try:
        yield
    finally:
        notifications._get_s3_event = original


@contextlib.contextmanager
def ignore_bucket_policies() -> Iterator[None]:
    """Bucket policies are stored and returned, but not enforced.

    moto 5.2 evaluates a bucket policy by the HTTP method alone (any GET on a
    key is ``s3:GetObject``, tagging included) and treats every condition key
    it does not know as failed, so under the access gate's conditional Denies
    it refuses the scanner itself everything. Real S3 evaluates the
    conditions; the gate's statements are checked by a policy linter in the
    tests instead.
    """
    from moto.iam.access_control import PermissionResult
    from moto.s3.models import FakeBucket

    original = FakeBucket.get_permission
    FakeBucket.get_permission = lambda self, action, resource: PermissionResult.NEUTRAL  # type: ignore[method-assign]
    try:
        yield
    finally:
        FakeBucket.get_permission = original  # type: ignore[method-assign]


@contextlib.contextmanager
def tag_archived_objects() -> Iterator[None]:
    """GetObjectTagging answers for objects in archive storage classes, as S3 does.

    Tags are metadata: S3 reads and writes them for Glacier Flexible Retrieval
    and Deep Archive objects without a restore (lifecycle rules and Batch
    Operations filter on them). moto 5.2 refuses GetObjectTagging for those
    with InvalidObjectState, as if it were a GET of the content.
    """
    import functools

    from moto.s3.responses import S3Response

    original = S3Response.get_object_tagging

    def get_object_tagging(self: Any) -> Any:
        unchecked = functools.partial(type(self)._get_key, self, validate_storage_class=False)
        self._get_key = unchecked
        try:
            return original(self)
        finally:
            del self._get_key

    S3Response.get_object_tagging = get_object_tagging  # type: ignore[method-assign]
    try:
        yield
    finally:
        S3Response.get_object_tagging = original  # type: ignore[method-assign]
