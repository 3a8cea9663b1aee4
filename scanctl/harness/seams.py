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
def record_retry_waits(waits: list[float], scale: float = 0.0) -> Iterator[None]:
    """Retry intervals are recorded, not slept: a retried execution takes milliseconds.

    With ``scale``, each is also slept at that fraction (a burst test needs the
    retries spread out in time, as AWS spreads them)."""
    import time

    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    class _Clock:
        @staticmethod
        def sleep(seconds: float) -> None:
            waits.append(seconds)
            if scale:
                time.sleep(seconds * scale)

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


class _RangeBody:
    """An object's content that reads only the bytes a Range asks for."""

    def __init__(self, key: Any) -> None:
        self.key = key
        self.size = int(key.size)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __getitem__(self, wanted: slice) -> bytes:
        start, stop, _ = wanted.indices(self.size)
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return self.key._value_buffer.read(max(0, stop - start))

    def read_all(self) -> bytes:
        return self[0 : self.size]


@contextlib.contextmanager
def ranged_reads() -> Iterator[None]:
    """A ranged GET reads its range, not the whole object.

    moto 5.2 answers every GET by copying the whole object out of its store
    (twice) and then slicing the range: the scanner's 8 MiB ranged GETs of a
    1 GiB object would copy 128 GiB. Here a GET with a Range header gets the
    content as a view that reads only the slice moto takes from it; anything
    that does not slice it (a Range moto ignores) gets the whole content, as
    before.
    """
    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response

    ranged = threading.local()
    value_property = FakeKey.value
    original_key_response = S3Response.key_response

    def value(self: Any) -> Any:
        if getattr(ranged, "active", False):
            return _RangeBody(self)
        return value_property.fget(self)

    def key_response(self: Any, request: Any, full_url: str, headers: Any) -> Any:
        if request.method != "GET" or not request.headers.get("range"):
            return original_key_response(self, request, full_url, headers)
        ranged.active = True
        try:
            status, response_headers, body = original_key_response(self, request, full_url, headers)
        finally:
            ranged.active = False
        if isinstance(body, _RangeBody):  # not sliced: the whole content after all
            body = body.read_all()
        return status, response_headers, body

    FakeKey.value = property(value, value_property.fset)  # type: ignore[method-assign,assignment]
    S3Response.key_response = key_response  # type: ignore[method-assign]
    try:
        yield
    finally:
        FakeKey.value = value_property  # type: ignore[method-assign]
        S3Response.key_response = original_key_response  # type: ignore[method-assign]


def put_from_file(bucket_name: str, key_name: str, path: Any, chunk: int = 8 << 20) -> Any:
    # ``path``: a file's path, or an open binary file to read from where it is.
    """PutObject of a file without holding it in memory: what S3 does with a stream.

    moto 5.2 keeps each object in a SpooledTemporaryFile (on disk beyond a few
    MB), but a PutObject through the SDK first holds the whole body in memory,
    several times (the request, botocore's checksum, moto's parsing). This
    writes the file into that store in chunks, with the eTag S3 gives a single
    PUT (the MD5), then sends the ObjectCreated:Put notification the SDK path
    would have sent. Small files still go through the SDK.
    """
    import hashlib

    from moto.s3 import notifications
    from moto.s3.models import s3_backends

    from scanctl.harness.environment import ACCOUNT_ID

    backend = s3_backends[ACCOUNT_ID]["aws"]
    key = backend.put_object(bucket_name, key_name, b"", disable_notification=True)
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    opened = contextlib.nullcontext(path) if hasattr(path, "read") else open(path, "rb")  # noqa: SIM115
    with key.lock, opened as source:
        key._value_buffer.seek(0)
        key._value_buffer.truncate()
        while block := source.read(chunk):
            key._value_buffer.write(block)
            digest.update(block)
            size += len(block)
        key.contentsize = size
        key._etag = digest.hexdigest()
    bucket = backend.get_bucket(bucket_name)
    notifications.send_event(
        ACCOUNT_ID, notifications.S3NotificationEvent.OBJECT_CREATED_PUT_EVENT, bucket, key
    )
    return key
