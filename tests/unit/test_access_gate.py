"""The access gate's bucket policy: what each statement denies, linted, and merged by Sid."""

from __future__ import annotations

import json

import parliament
import pytest

from functions.shared import access_gate

SCANNER = "arn:aws:iam::111122223333:role/scanner-ScanObject"
TAGGER = "arn:aws:iam::111122223333:role/scanner-ApplyVerdict"
ADMIN = "arn:aws:iam::111122223333:role/admin"


def gate(**kwargs):
    return access_gate.statements(
        "acme-uploads",
        scanner_roles=[SCANNER, TAGGER],
        tagging_roles=[TAGGER],
        unscanned_readers=kwargs.get("readers", [ADMIN]),
    )


def by_sid(statements):
    return {s["Sid"]: s for s in statements}


def test_reads_are_denied_unless_the_object_is_tagged_clean():
    read = by_sid(gate())[access_gate.READ_SID]
    assert read["Effect"] == "Deny"
    assert read["Action"] == ["s3:GetObject", "s3:GetObjectVersion"]
    assert read["Resource"] == "arn:aws:s3:::acme-uploads/*"
    # StringNotEquals also matches an object without the tag: unscanned is unreadable.
    assert read["Condition"]["StringNotEquals"] == {"s3:ExistingObjectTag/scan-status": "clean"}
    # Exempt: the scanner's own readers and the configured unscanned readers.
    assert read["Condition"]["ArnNotLike"]["aws:PrincipalArn"] == [SCANNER, TAGGER, ADMIN]


def test_nobody_but_the_tagger_may_send_a_scan_tag_key_not_even_an_admin():
    scan_tags = by_sid(gate())[access_gate.SCAN_TAGS_SID]
    assert "s3:PutObject" in scan_tags["Action"]  # at upload
    assert "s3:PutObjectTagging" in scan_tags["Action"]  # after it
    patterns = scan_tags["Condition"]["ForAnyValue:StringLike"]["s3:RequestObjectTagKeys"]
    # Every spelling: S3 tag keys and StringLike are case-sensitive, a reader may not be.
    assert len(patterns) == 16
    assert {"scan-*", "Scan-*", "SCAN-*", "sCaN-*"} <= set(patterns)
    assert scan_tags["Condition"]["ArnNotLike"]["aws:PrincipalArn"] == [TAGGER]


def test_other_tag_writes_and_deletes_are_the_taggers_and_the_admins_only():
    tagging = by_sid(gate())[access_gate.TAGGING_SID]
    assert set(tagging["Action"]) == {
        "s3:PutObjectTagging",
        "s3:PutObjectVersionTagging",
        "s3:DeleteObjectTagging",
        "s3:DeleteObjectVersionTagging",
    }
    assert tagging["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": [TAGGER, ADMIN]}}


def test_copies_from_another_bucket_are_refused_they_would_bring_tags_along():
    copy = by_sid(gate())[access_gate.COPY_SID]
    assert copy["Action"] == "s3:PutObject"
    assert copy["Condition"]["Null"] == {"s3:x-amz-copy-source": "false"}
    assert copy["Condition"]["StringNotLike"] == {
        "s3:x-amz-copy-source": ["acme-uploads/*", "/acme-uploads/*"]
    }
    assert copy["Condition"]["ArnNotLike"]["aws:PrincipalArn"] == [TAGGER]


def test_denies_cover_every_principal_service_principals_included():
    assert {s["Principal"] for s in gate()} == {"*"}


def test_the_policy_passes_a_real_policy_linter():
    # parliament knows which condition keys each S3 action supports: a key that
    # does not apply to an action would make the Deny silently never match.
    policy = json.dumps({"Version": "2012-10-17", "Statement": gate()})
    findings = parliament.analyze_policy_string(
        policy, ignore_private_auditors=True, include_community_auditors=False
    ).findings
    assert findings == []


def test_the_linter_does_catch_a_key_that_does_not_apply():
    # Proof that the test above can fail: RequestObjectTagKeys means nothing to GetObject.
    broken = gate()
    broken[0]["Condition"]["ForAnyValue:StringLike"] = {"s3:RequestObjectTagKeys": ["scan-*"]}
    findings = parliament.analyze_policy_string(
        json.dumps({"Version": "2012-10-17", "Statement": broken}),
        ignore_private_auditors=True,
        include_community_auditors=False,
    ).findings
    # once for each of the two read actions
    assert {f.issue for f in findings} == {"UNKNOWN_CONDITION_FOR_ACTION"}


def test_merge_keeps_other_statements_and_is_idempotent():
    existing = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "SslOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*"},
            {**gate()[0], "Condition": {"old": "version"}},
        ],
    }
    once = access_gate.merge(existing, gate())
    assert [s["Sid"] for s in once["Statement"]] == ["SslOnly", *access_gate.SIDS]
    assert once["Statement"][1] == gate()[0]  # replaced in place
    assert access_gate.merge(once, gate()) == once


def test_the_gate_needs_the_scanners_roles():
    with pytest.raises(ValueError, match="roles"):
        access_gate.statements("b", scanner_roles=[], tagging_roles=[TAGGER])
