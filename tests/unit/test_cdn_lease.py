"""The CDN lease: one fetcher at a time, none during a cool-down, one fallback an hour.

DynamoDB's conditional writes are what the lease is; moto evaluates the same
conditions. The clock is the test's.
"""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from functions.record_audit.schema import CDN_LEASE_KEY, create_table_arguments, from_item
from functions.shared.cdn_lease import FALLBACK_SPACING_S, CdnBusy, CdnLease, Holder, Refusal

TABLE = "audit"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ddb():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(**create_table_arguments(TABLE))
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


def lease(ddb, clock: Clock, holder: Holder) -> CdnLease:
    return CdnLease(ddb, TABLE, holder, clock=clock)


def item(ddb) -> dict:
    key = {k: {"S": v} for k, v in CDN_LEASE_KEY.items()}
    return from_item(ddb.get_item(TableName=TABLE, Key=key).get("Item", {}))


def test_one_holder_at_a_time_until_it_gives_the_lease_back(ddb, clock):
    updater = lease(ddb, clock, Holder.UPDATER)
    updater.take(900)

    with pytest.raises(CdnBusy) as refused:
        lease(ddb, clock, Holder.FALLBACK).take(660)
    assert refused.value.why is Refusal.HELD
    assert refused.value.holder == "updater"
    assert refused.value.until == clock.now + 900
    assert item(ddb)["holder"] == updater.owner  # a refused take changes nothing

    updater.give_back()
    lease(ddb, clock, Holder.FALLBACK).take(660)


def test_a_holder_that_died_blocks_nobody_past_its_expiry(ddb, clock):
    lease(ddb, clock, Holder.FALLBACK).take(660)  # and never gives it back
    clock.now += 661
    other = lease(ddb, clock, Holder.UPDATER)
    other.take(900)
    assert item(ddb)["holder"] == other.owner


def test_a_cool_down_refuses_everyone_until_it_ends(ddb, clock):
    fallback = lease(ddb, clock, Holder.FALLBACK)
    fallback.take(660)
    fallback.cool_down(clock.now + 3600, "a 429")
    fallback.give_back()

    for holder in Holder:
        with pytest.raises(CdnBusy) as refused:
            lease(ddb, clock, holder).take(60)
        assert refused.value.why is Refusal.COOL_DOWN
        assert refused.value.until == clock.now + 3600
    clock.now += 3601
    lease(ddb, clock, Holder.UPDATER).take(60)


def test_a_shorter_cool_down_never_replaces_a_longer_one(ddb, clock):
    lease(ddb, clock, Holder.UPDATER).cool_down(clock.now + 86400, "a 403")
    lease(ddb, clock, Holder.FALLBACK).cool_down(clock.now + 600, "a 429")
    assert float(item(ddb)["coolDownUntil"]) == clock.now + 86400
    assert item(ddb)["coolDownReason"] == "a 403"


def test_one_fallback_fetch_an_hour_across_containers_but_the_updater_runs(ddb, clock):
    first = lease(ddb, clock, Holder.FALLBACK)
    first.take(660)
    first.give_back()
    clock.now += 60

    with pytest.raises(CdnBusy) as refused:
        lease(ddb, clock, Holder.FALLBACK).take(660)
    assert refused.value.why is Refusal.RECENT_FALLBACK
    assert refused.value.until == clock.now - 60 + FALLBACK_SPACING_S
    # The updater fills the cache for everyone: the spacing is not for it.
    updater = lease(ddb, clock, Holder.UPDATER)
    updater.take(900)
    updater.give_back()

    clock.now += FALLBACK_SPACING_S
    lease(ddb, clock, Holder.FALLBACK).take(660)


def test_giving_back_a_lease_another_has_taken_since_leaves_it_alone(ddb, clock):
    stale = lease(ddb, clock, Holder.FALLBACK)
    stale.take(10)
    clock.now += 11
    current = lease(ddb, clock, Holder.UPDATER)
    current.take(900)
    stale.give_back()
    assert item(ddb)["holder"] == current.owner


def test_a_damaged_or_hostile_lease_item_is_read_as_at_most_a_week(ddb, clock):
    # GIVEN a cool-down in the year 3e22 (the scanner's role may write this item)
    key = {k: {"S": v} for k, v in CDN_LEASE_KEY.items()}
    ddb.put_item(TableName=TABLE, Item={**key, "coolDownUntil": {"N": "1e30"}})

    # THEN the refusal says so, bounded, instead of failing on the date
    with pytest.raises(CdnBusy) as refused:
        lease(ddb, clock, Holder.UPDATER).take(900)
    assert refused.value.why is Refusal.COOL_DOWN
    assert refused.value.until == clock.now + 7 * 24 * 3600
