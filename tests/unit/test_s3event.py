"""S3 notification parsing: what start_scan makes of an SQS body."""

from __future__ import annotations

import copy
import json

import pytest

from functions.shared.errors import InvalidInput
from functions.shared.s3event import execution_input, parse_body
from tests.conftest import load_event


def body_with_key(encoded_key: str) -> str:
    event = copy.deepcopy(load_event("s3_object_created.json"))
    event["Records"][0]["s3"]["object"]["key"] = encoded_key
    return json.dumps(event)


@pytest.mark.parametrize(
    ("encoded", "key"),
    [
        ("reports/q3+summary.pdf", "reports/q3 summary.pdf"),  # '+' is a space
        ("a%2Bb.txt", "a+b.txt"),  # '%2B' is a plus
        ("caf%C3%A9/%E6%97%A5%E6%9C%AC.txt", "café/日本.txt"),  # unicode
        ("deep/ly/nested/dir/file", "deep/ly/nested/dir/file"),  # slashes stay
        ("trailing/", "trailing/"),
        ("100%25+sure", "100% sure"),
    ],
)
def test_keys_are_url_decoded(encoded, key):
    [event] = parse_body(body_with_key(encoded)).created
    assert event.object.key == key


def test_record_fields_are_kept():
    [event] = parse_body(json.dumps(load_event("s3_object_created.json"))).created
    assert event.object.bucket == "uploads"
    assert event.object.version_id == "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
    assert event.object.size == 1234
    assert event.object.sequencer == "0055AED6DCD90281E5"
    assert event.event_time == "2026-11-27T12:00:00.000Z"
    payload = execution_input(event, "msg-1")
    assert payload["object"]["key"] == "reports/q3 summary+été.pdf"
    assert payload["trigger"] == {
        "source": "s3-event",
        "eventName": "ObjectCreated:Put",
        "eventTime": "2026-11-27T12:00:00.000Z",
        "messageId": "msg-1",
    }


def test_test_event_is_ignored():
    parsed = parse_body(json.dumps(load_event("s3_test_event.json")))
    assert (parsed.created, parsed.ignored, parsed.invalid) == ([], [], [])


@pytest.mark.parametrize(
    "body",
    ["not json", "[]", "{}", json.dumps({"Records": []}), json.dumps({"Records": "x"})],
)
def test_a_body_that_is_no_s3_notification_is_invalid_input(body):
    with pytest.raises(InvalidInput):
        parse_body(body)


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ({"eventSource": "aws:sns"}, "not an S3 event record"),
        ("a string", "not an S3 event record"),
        ({"eventSource": "aws:s3"}, "names no event"),
        ({"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}, "lacks"),
        ({"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
          "s3": {"bucket": {"name": "uploads"}, "object": {"key": ""}}}, "empty key"),
    ],
)  # fmt: skip
def test_each_record_is_taken_on_its_own(record, says):
    # GIVEN a body with a good record, an ObjectRemoved one and a malformed one
    good = load_event("s3_object_created.json")["Records"][0]
    removed = copy.deepcopy(good) | {"eventName": "ObjectRemoved:Delete"}
    body = json.dumps({"Records": [record, removed, good]})

    parsed = parse_body(body)

    # THEN the good one is kept, the removal ignored, the malformed one named
    assert [e.object.key for e in parsed.created] == ["reports/q3 summary+été.pdf"]
    assert parsed.ignored == ["ObjectRemoved:Delete"]
    [invalid] = parsed.invalid
    assert invalid.startswith("record 0: ")
    assert says in invalid


def test_several_records_in_one_body():
    event = load_event("s3_object_created.json")
    second = copy.deepcopy(event["Records"][0])
    second["s3"]["object"]["key"] = "other.txt"
    event["Records"].append(second)
    keys = [e.object.key for e in parse_body(json.dumps(event)).created]
    assert keys[1] == "other.txt"
    assert len(keys) == 2


def test_two_rescan_runs_alike_in_their_first_characters_start_executions_of_their_own():
    # Names keep only the first characters of the run id: the monthly runs of June
    # and July must still not collide (the second's starts would be taken for
    # duplicates, and nothing rescanned).
    def name(run: str) -> str:
        event = copy.deepcopy(load_event("s3_object_created.json"))
        event["Records"][0]["scanner"] = {"rescanRun": run}
        [created] = parse_body(json.dumps(event)).created
        return created.execution_name

    june, july = name("monthly-rescan-2024-06"), name("monthly-rescan-2024-07")
    assert june != july
    assert june.startswith("rescan-monthly-rescan-20")
    assert name("monthly-rescan-2024-06") == june  # a redelivery maps to the same one
