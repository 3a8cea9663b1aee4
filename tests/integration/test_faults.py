"""The fault campaign (`make faults` runs 1,000 objects): nothing is lost, and one redrive fixes it.

60 objects (clean, EICAR, nested, encrypted, too large) through the local
pipeline with faults in every step (bench/faults.py says which), then the
reconciliation an operator would do.
"""

from __future__ import annotations

from bench import faults


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
    assert set(result["injected"]) >= {"transient", *faults.PERSISTENT}
    # AND every succeeded object got the verdict it was made for
    assert result["wrong_verdicts"] == []
    # AND one redrive with the faults gone brought every FAILED one to SUCCEEDED,
    # same execution, right verdict
    assert result["failed"] == first[faults.FAILED_RECORDED]
    assert result["recovered"] == result["failed"]
    assert result["not_redrivable"] == []
