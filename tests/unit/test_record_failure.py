"""The failure recorder's reading of EventBridge's notice (no AWS: fakes of one call each)."""

from __future__ import annotations

import json

import pytest

from functions.record_failure.failures import (
    FailedExecution,
    failure_state,
    mark_object,
    superseded,
)
from functions.shared.errors import InvalidInput

ARN = "arn:aws:states:us-east-1:123456789012:execution:scan-object:a_txt-0123"


def notice(status: str = "FAILED", redrives: int = 0, **detail) -> dict:
    return {
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "detail": {
            "executionArn": ARN,
            "name": "a_txt-0123",
            "status": status,
            "startDate": 1764320000123,
            "input": json.dumps({"object": {"bucket": "uploads", "key": "a.txt"}}),
            "error": "ScanEngineUnavailable",
            "cause": "down",
            "redriveCount": redrives,
            **detail,
        },
    }


class Described:
    def __init__(self, status: str, redrives: int) -> None:
        self.answer = {"status": status, "redriveCount": redrives}

    def describe_execution(self, executionArn: str) -> dict:
        assert executionArn == ARN
        return self.answer


def test_the_start_time_is_spelled_as_record_audit_spells_it():
    failed = FailedExecution.from_event(notice())
    assert failed.execution.start_time == "2025-11-28T08:53:20.123Z"
    assert failed.error == "ScanEngineUnavailable"


@pytest.mark.parametrize(
    ("status", "error"), [("TIMED_OUT", "States.Timeout"), ("ABORTED", "ExecutionAborted")]
)
def test_a_status_without_an_error_gets_a_name(status, error):
    failed = FailedExecution.from_event(notice(status, error=None, cause=None))
    assert failed.error == error


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"detail-type": "Something Else", "detail": {}},
        notice("RUNNING"),
        notice(startDate=None),
    ],
)
def test_anything_else_is_invalid_input(event):
    with pytest.raises(InvalidInput):
        FailedExecution.from_event(event)


def test_a_notice_overtaken_by_a_redrive_is_out_of_date():
    failed = FailedExecution.from_event(notice())
    # A redrive is running: its own ending will speak.
    assert "running" in superseded(Described("RUNNING", 1), failed)
    # A later redrive already ended.
    assert "redrive 1" in superseded(Described("SUCCEEDED", 1), failed)
    # This is the latest word.
    assert superseded(Described("FAILED", 0), failed) is None


def test_the_object_is_marked_only_when_its_verdict_was_never_applied():
    failed = FailedExecution.from_event(notice())
    applied = failure_state(failed, {"object": {"bucket": "uploads", "key": "a.txt"}, "action": {}})
    applied["action"] = {"action": "tagged"}

    class NoS3:
        def mark_unfinished(self, *args):
            raise AssertionError("must not mark")

    marking = mark_object(NoS3(), applied, failed.error, failed.execution)
    assert marking["markedAs"] is None

    # ...and is marked when it was not: the scanned version, with the scan's time
    class Marks:
        calls: list = []

        def mark_unfinished(self, obj, scan, error, when):
            self.calls.append((obj, scan, error, when))
            return {"markedAs": "error", "note": "marked"}

    reached = failure_state(
        failed,
        {
            "object": {"bucket": "uploads", "key": "a.txt", "versionId": "v1"},
            "scan": {"verdict": "clean", "scannedAt": "2026-11-27T12:00:01.000Z"},
        },
    )
    marker = Marks()
    marking = mark_object(marker, reached, failed.error, failed.execution)
    assert marking["markedAs"] == "error"
    [(obj, scan, error, when)] = marker.calls
    assert (obj.key, obj.version_id, scan["verdict"]) == ("a.txt", "v1", "clean")
    assert (error, when) == (failed.error, "2026-11-27T12:00:01.000Z")


def test_a_replayed_dead_letter_gives_the_recorder_what_it_was_to_be_given():
    from scanctl.ops import recorder_input

    event = {"detail-type": "Step Functions Execution Status Change", "detail": {"x": 1}}
    # EventBridge's DLQ and Express's Keep The Failure hold the input itself...
    assert recorder_input(json.dumps(event)) == event
    # ... Lambda's on-failure destination wraps it in a record of the failed invocation.
    wrapped = {"version": "1.0", "requestContext": {"condition": "RetriesExhausted"}}
    assert recorder_input(json.dumps({**wrapped, "requestPayload": event})) == event


def test_an_express_execution_is_named_by_its_name_not_its_run_id():
    from functions.record_failure.recorder import _execution_name

    # Express ARNs carry a run id after the name (names are not unique in Express)
    assert _execution_name("arn:aws:states:us-east-1:1:express:scan:a_txt-1f:5b1c-77") == "a_txt-1f"
    assert _execution_name("arn:aws:states:us-east-1:1:execution:scan:a_txt-1f") == "a_txt-1f"
