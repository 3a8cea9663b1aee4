"""Execution names: deterministic, valid for Step Functions, distinct per version."""

from __future__ import annotations

import re

import pytest

from functions.shared.contracts import ObjectRef
from functions.shared.naming import MAX_LENGTH, execution_name

VALID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


@pytest.mark.parametrize(
    "key",
    [
        "a.txt",
        "reports/q3 summary.pdf",
        "日本/データ.csv",
        "x" * 1024,
        "dir/",
        "weird/<>{}[]?*\"'`$|\\:;,.txt",
        "-leading-dash",
    ],
)
def test_names_are_valid(key):
    name = execution_name(ObjectRef("uploads", key, version_id="v1"))
    assert VALID.match(name), name
    assert len(name) <= MAX_LENGTH


def test_same_version_same_name():
    a = ObjectRef("uploads", "a.txt", version_id="v1")
    assert execution_name(a) == execution_name(ObjectRef("uploads", "a.txt", version_id="v1"))


@pytest.mark.parametrize(
    "other",
    [
        ObjectRef("uploads", "a.txt", version_id="v2"),
        ObjectRef("other-bucket", "a.txt", version_id="v1"),
        ObjectRef("uploads", "b.txt", version_id="v1"),
    ],
)
def test_different_versions_or_objects_get_different_names(other):
    assert execution_name(ObjectRef("uploads", "a.txt", version_id="v1")) != execution_name(other)


def test_unversioned_overwrites_are_told_apart_by_sequencer():
    first = ObjectRef("uploads", "a.txt", sequencer="0055AED6DCD90281E5")
    second = ObjectRef("uploads", "a.txt", sequencer="0055AED6DCD90281E6")
    assert execution_name(first) != execution_name(second)


def test_names_read_like_the_key():
    assert execution_name(ObjectRef("uploads", "reports/q3.pdf", version_id="v")).startswith(
        "q3_pdf-"
    )


def test_prefix_keeps_rescans_apart_from_events():
    obj = ObjectRef("uploads", "a.txt", version_id="v1")
    rescan = execution_name(obj, prefix="rescan-20261127T1200")
    assert rescan.startswith("rescan-20261127T1200-")
    assert rescan != execution_name(obj)
    assert VALID.match(execution_name(obj, prefix="r" * 200))


def test_s3_uris_keep_every_key_character():
    from scanctl.ops import OperatorError, parse_s3_uri

    assert parse_s3_uri("s3://b/a#1?x=2.pdf") == ("b", "a#1?x=2.pdf")
    assert parse_s3_uri("s3://b") == ("b", "")
    with pytest.raises(OperatorError):
        parse_s3_uri("s3://b", need_key=True)
    with pytest.raises(OperatorError):
        parse_s3_uri("b/key")
