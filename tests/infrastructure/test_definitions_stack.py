"""Definitions on deploy day, as the CLI synthesizes them: the deploy fills the cache,
the updater keeps freshclam's state apart, the CDN lease is one item, the cool-down alarms."""

from __future__ import annotations

import pytest

from functions.record_audit.schema import CDN_LEASE_PARTITION
from stacks.constants import DEFINITIONS_PREFIX, FRESHCLAM_STATE_KEY
from stacks.nag import flatten_reference
from tests.infrastructure.conftest import TOPIC_ARN
from tests.infrastructure.test_stack import (
    all_statements,
    as_list,
    functions_by_handler,
    resources,
    role_of,
    statements_for,
)

VARIANTS = ["minimal", "everything", "express"]


def logical_id(template: dict, resource: dict) -> str:
    return next(k for k, r in template["Resources"].items() if r is resource)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_deploy_runs_the_updater_once_without_waiting_for_it(synths, variant):
    template = synths[variant]["template"]
    updater = logical_id(template, functions_by_handler(template)["update_definitions"])

    # A trigger invokes the updater's current version during the deploy...
    [trigger] = resources(template, "Custom::Trigger").values()
    props = trigger["Properties"]
    version = template["Resources"][props["HandlerArn"]["Ref"]]
    assert version["Type"] == "AWS::Lambda::Version"
    assert version["Properties"]["FunctionName"] == {"Ref": updater}
    # ...again whenever a deploy changes it (a new image: a new ClamAV)...
    assert props["ExecuteOnHandlerChange"] is True
    # ...asynchronously: the deploy does not wait for ClamAV's CDN, and a refusal
    # cannot roll the stack back (a failed run shows on the updater's alarms).
    assert props["InvocationType"] == "Event"

    # The trigger's provider may invoke the updater (its versions) and nothing else.
    provider = template["Resources"][props["ServiceToken"]["Fn::GetAtt"][0]]
    role = template["Resources"][role_of(provider)]["Properties"]
    [statement] = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert statement["Action"] == ["lambda:InvokeFunction"]
    assert [flatten_reference(r) for r in as_list(statement["Resource"])] == [f"<{updater}.Arn>:*"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_freshclam_state_is_kept_beside_the_cache_where_no_scanner_reads(synths, variant):
    template = synths[variant]["template"]
    assert not FRESHCLAM_STATE_KEY.startswith(f"{DEFINITIONS_PREFIX}/")
    env = functions_by_handler(template)["update_definitions"]["Properties"]["Environment"]
    assert env["Variables"]["FRESHCLAM_STATE_KEY"] == FRESHCLAM_STATE_KEY

    def grants(name: str) -> set[tuple[str, str]]:
        return {
            (action, flatten_reference(resource))
            for s in statements_for(template, name)
            for action in as_list(s["Action"])
            for resource in as_list(s["Resource"])
        }

    state = {g for g in grants("update_definitions") if g[1].endswith(f"/{FRESHCLAM_STATE_KEY}")}
    assert {action for action, _ in state} == {"s3:GetObject", "s3:PutObject"}
    # The scanners read the definitions prefix only: not the updater's state.
    [cache] = resources(template, "AWS::S3::Bucket")
    for reader in ("scan_object", "fetch_definitions"):
        cache_objects = {r for _, r in grants(reader) if r.startswith(f"<{cache}.Arn>/")}
        assert cache_objects == {f"<{cache}.Arn>/{DEFINITIONS_PREFIX}/*"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_cdn_lease_is_one_item_the_updater_and_the_scanner_may_write(synths, variant):
    template = synths[variant]["template"]
    [table] = resources(template, "AWS::DynamoDB::Table")
    for name in ("scan_object", "update_definitions"):
        env = functions_by_handler(template)[name]["Properties"]["Environment"]["Variables"]
        assert env["DDB_TABLE_NAME"] == {"Ref": table}
        lease = [
            s
            for s in statements_for(template, name)
            if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))
            and s["Resource"] == {"Fn::GetAtt": [table, "Arn"]}
        ]
        # UpdateItem alone (a refused write returns the item: no GetItem), and
        # only on the lease's partition key: no audit item can be touched.
        assert [(s["Action"], s["Condition"]) for s in lease] == [
            (
                "dynamodb:UpdateItem",
                {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [CDN_LEASE_PARTITION]}},
            )
        ], name
    # Nobody else updates items of the audit table.
    writers = [s for s in all_statements(template) if "dynamodb:UpdateItem" in as_list(s["Action"])]
    assert len(writers) == 2
    assert all("Condition" in s for s in writers)
    # An object's partition key is an s3:// URI: the lease's can never be one.
    assert not CDN_LEASE_PARTITION.startswith("s3://")


def alarms(template: dict) -> dict[str, dict]:
    return {
        a["Properties"]["AlarmDescription"].rsplit(": ", 1)[1]: a["Properties"]
        for a in resources(template, "AWS::CloudWatch::Alarm").values()
    }


def test_an_alarm_fires_on_a_cool_down_and_one_on_the_age_of_the_set(minimal, everything):
    cool_down = alarms(minimal)["DefinitionsCoolDown"]
    assert (cool_down["Namespace"], cool_down["MetricName"]) == (
        "S3VirusScanner",
        "DefinitionsCoolDown",
    )
    # The updater's metric (Powertools adds its service as a dimension).
    assert cool_down["Dimensions"] == [{"Name": "service", "Value": "update-definitions"}]
    assert cool_down["Statistic"] == "Maximum"
    assert cool_down["Threshold"] == 1
    assert cool_down["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert "StaleDefinitions" in alarms(minimal)  # the age of the set, as before
    assert alarms(everything)["DefinitionsCoolDown"]["AlarmActions"] == [TOPIC_ARN]


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_cold_scanner_waits_for_the_cache_well_inside_its_timeout(synths, variant):
    scanner = functions_by_handler(synths[variant]["template"])["scan_object"]["Properties"]
    wait = int(scanner["Environment"]["Variables"]["DEFINITIONS_WAIT_SECONDS"])
    assert wait == 120
    assert wait <= scanner["Timeout"] / 4
