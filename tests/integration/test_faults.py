"""The fault campaign (`make faults` runs 1,000 objects): nothing is lost, nothing is
wrongly marked, and one redrive fixes it.

60 objects (clean, EICAR, nested, encrypted, too large) through the local
pipeline with faults in every step (bench/faults.py says which), then the
reconciliation an operator would do; every object judged by what S3 and the
audit table hold. And the campaign itself can fail: with marking or the
quarantine switched off, it says which objects are wrong.
"""

from __future__ import annotations

import pytest

from bench import faults
from functions.apply_verdict import actions


def test_sixty_objects_through_faults_in_every_step_are_all_accounted_for(
    tmp_path, signatures, clamav_work
):
    result = faults.campaign(60, seed=5, work=tmp_path, definitions=signatures)

    # THEN every object is exactly one of: succeeded and audited, failed and
    # recorded, or waiting in a DLQ; nothing is lost and the counts add up
    first = result["first"]
    assert first[faults.LOST] == 0, result["lost"]
    assert sum(first.values()) == 60
    assert first[faults.FAILED_RECORDED] > 0  # the campaign did break things
    assert first[faults.IN_DLQ] > 0
    # AND every kind of fault fired
    assert set(result["injected"]) >= {"transient", "status-change-lost", *faults.PERSISTENT}
    # AND every succeeded object got the verdict it was made for
    assert result["wrong_verdicts"] == []
    # AND one redrive with the faults gone brought every FAILED one to SUCCEEDED,
    # same execution, right verdict
    assert result["failed"] == first[faults.FAILED_RECORDED]
    assert result["recovered"] == result["failed"]
    assert result["not_redrivable"] == []
    # AND judged by S3 itself, every object ended as it was made to: infected
    # versions gone with their quarantine copy, the others tagged by us (no forged
    # clean left), the audit table agreeing; nothing wrong while the faults lasted
    assert result["wrongly_marked"] == {}
    assert result["scan_dlq_requeued"] > 0


def _no_tags(self, obj, ours):
    return {"action": "tagged", "tags": dict(ours), "tagsDropped": []}


def _no_quarantine(self, obj, signature, scan):
    return {"action": "quarantined", "quarantine": None, "deletedVersionId": obj.version_id}


@pytest.mark.parametrize(
    ("disabled", "replacement", "says"),
    [
        ("_tag", _no_tags, "tagged None"),
        ("_copy_and_delete", _no_quarantine, "infected version still in the bucket"),
    ],
    ids=["marking", "quarantine"],
)
def test_the_campaign_fails_when_marking_or_the_quarantine_is_disabled(
    tmp_path, signatures, clamav_work, monkeypatch, disabled, replacement, says
):
    # GIVEN a build whose Apply Verdict reports tags (or a quarantine) it never made
    monkeypatch.setattr(actions.VerdictApplier, disabled, replacement)

    result = faults.campaign(10, seed=5, work=tmp_path, definitions=signatures)

    # THEN the bookkeeping alone looks fine, but S3 gives it away
    assert result["lost"] == []
    assert any(says in why for why in result["wrongly_marked"].values()), result["wrongly_marked"]
