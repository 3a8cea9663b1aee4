"""bench/cost.py: the transitions it counts come from the ASL, and its totals make sense."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "cost.py"
_SPEC = importlib.util.spec_from_file_location("bench_cost", _PATH)
assert _SPEC
assert _SPEC.loader
cost = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(cost)

ASL = cost.load_asl()


def test_clean_path_without_webhook_visits_exactly_five_states():
    assert cost.scenario_path(ASL, "clean", webhook=False) == [
        "Fetch Definitions",
        "Scan Object",
        "Which Verdict?",
        "Tag As Clean",
        "Record Audit",
    ]


def test_the_webhook_adds_exactly_one_state():
    assert cost.scenario_path(ASL, "clean", webhook=True)[-2:] == ["Record Audit", "Notify Webhook"]


def test_infected_goes_to_quarantine_and_the_webhook_adds_one_transition():
    clean = cost.scenario_path(ASL, "clean", webhook=False)
    infected = cost.scenario_path(ASL, "infected", webhook=True)
    assert "Quarantine Or Delete" in infected
    assert "Tag As Clean" not in infected
    assert infected[-1] == "Notify Webhook"
    assert len(infected) == len(clean) + 1


def test_counts_follow_the_definition_not_a_table():
    asl = copy.deepcopy(ASL)
    asl["States"]["Record Audit"]["Next"] = "Pause"
    asl["States"]["Pause"] = {"Type": "Pass", "Next": "Notify Webhook"}
    before = cost.per_object(ASL, cost.MIB, "clean", webhook=True)
    after = cost.per_object(asl, cost.MIB, "clean", webhook=True)
    assert after["transitions"] == before["transitions"] + 1
    extra = after["components"]["Step Functions transitions"]
    assert extra - before["components"]["Step Functions transitions"] == pytest.approx(
        cost.price("sfn_standard_transition")
    )


@pytest.mark.parametrize("verdict", ["clean", "infected"])
def test_totals_are_positive_and_grow_with_object_size(verdict):
    sizes = [100 * cost.KIB, cost.MIB, 10 * cost.MIB, 100 * cost.MIB]
    ours = [cost.per_object(ASL, s, verdict, webhook=False) for s in sizes]
    theirs = [cost.guardduty_per_object(s)["total"] for s in sizes]
    assert all(v >= 0 for o in ours for v in o["components"].values())
    totals = [o["total"] for o in ours]
    assert all(t > 0 for t in totals)
    assert totals == sorted(totals)
    assert totals[0] < totals[-1]
    assert theirs == sorted(theirs)
    assert theirs[0] < theirs[-1]
    assert all(v > 0 for v in cost.fixed_monthly().values())


def test_express_bills_requests_duration_and_logs_instead_of_transitions():
    standard = cost.per_object(ASL, cost.MIB, "clean", webhook=False)
    express = cost.per_object(ASL, cost.MIB, "clean", webhook=False, workflow="express")
    assert "Step Functions transitions" not in express["components"]
    assert express["components"]["Step Functions Express requests"] == pytest.approx(1e-6)
    # Both log the same events with their data; Lambda, S3, SQS and DynamoDB are the
    # same work either way.
    shared = {k: v for k, v in standard["components"].items() if k != "Step Functions transitions"}
    assert {k: express["components"][k] for k in shared} == shared
    assert express["total"] < standard["total"]


def test_express_logs_without_execution_data_cost_less_and_more_states_log_more():
    def logs(**kw):
        return cost.per_object(ASL, cost.MIB, workflow="express", **kw)["components"][
            "CloudWatch Logs ingestion"
        ]

    with_data = logs(verdict="clean", webhook=False)
    assert logs(verdict="clean", webhook=False, execution_data=False) < with_data / 2
    assert logs(verdict="clean", webhook=True) > with_data


def test_express_duration_is_billed_in_100_ms_steps_of_64_mb():
    one = cost.workflow_cost(["a"], 1, "express")["Step Functions Express duration"]
    assert cost.workflow_cost(["a"], 100, "express")["Step Functions Express duration"] == one
    assert cost.workflow_cost(["a"], 101, "express")[
        "Step Functions Express duration"
    ] == pytest.approx(2 * one)
    assert one == pytest.approx(64 / 1024 * 0.1 * cost.price("sfn_express_gb_second"))


def test_cli_prices_the_workflow_asked_for(capsys):
    import json

    assert cost.main(["--workflow", "express", "--json", "--size", "1MB"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["workflow"] == "express"
    [row] = report["per_million_objects"]
    assert "Step Functions Express requests" in row["ours"]
    assert report["transitions"]["clean"]["count"] == 5
    assert report["transitions"]["clean+webhook"]["count"] == 6
    with pytest.raises(SystemExit):
        cost.main(["--no-execution-data"])  # only with --workflow express
