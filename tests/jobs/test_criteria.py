import copy

import pytest

from common.errors import ValidationFailed
from jobs.criteria import criteria_validate
from tests.factories.jobs import CRITERIA
from verification.runner.criteria import Criteria, CriteriaError


def _with(path_update):
    document = copy.deepcopy(CRITERIA)
    path_update(document)
    return document


def test_valid_document_is_normalized():
    normalized = criteria_validate(CRITERIA)
    assert normalized["tiers"][-1]["fraction"] == 1.0
    assert normalized["criteria"][0] == {
        "metric": "wall_time",
        "statistic": "median",
        "kind": "speedup",
        "threshold": 1.5,
    }


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda d: d.update(criteria=[]), "criteria.criteria"),
        (lambda d: d["criteria"][0].update(metric="vibes"), "criteria.criteria[0].metric"),
        (lambda d: d["criteria"][0].update(statistic="p42"), "criteria.criteria[0].statistic"),
        (lambda d: d["criteria"][0].update(kind="faster"), "criteria.criteria[0].kind"),
        (lambda d: d["criteria"][0].update(threshold=0.9), "criteria.criteria[0].threshold"),
        (lambda d: d["criteria"][0].update(threshold=float("nan")), "criteria.criteria[0].threshold"),
        (
            lambda d: d["criteria"].append({"metric": "peak_memory", "kind": "no_worse", "tolerance": 2}),
            "criteria.criteria[1].tolerance",
        ),
        (
            lambda d: d["criteria"].append(
                {"metric": "latency", "statistic": "p95", "kind": "absolute", "threshold": -1}
            ),
            "criteria.criteria[1].threshold",
        ),
        (lambda d: d.update(correctness={"mode": "close enough"}), "criteria.correctness.mode"),
        (lambda d: d.update(correctness={"mode": "numeric", "rtol": -1}), "criteria.correctness.rtol"),
        (
            lambda d: d.update(correctness={"mode": "scorer", "min_score_ratio": 1.5}),
            "criteria.correctness.min_score_ratio",
        ),
        (lambda d: d.update(tiers=[]), "criteria.tiers"),
        (lambda d: d["tiers"][1].update(speedup=1.2), "criteria.tiers[1].speedup"),
        (lambda d: d["tiers"][1].update(fraction=0.4), "criteria.tiers[1].fraction"),
        (lambda d: d["tiers"][1].update(fraction=0.9), "criteria.tiers[1].fraction"),
        (lambda d: d["tiers"][0].update(speedup=1.2), "criteria.tiers[0].speedup"),
        (lambda d: d["tiers"][0].update(fraction=0.123456), "criteria.tiers[0].fraction"),
    ],
)
def test_each_invalid_field_is_named(mutate, field):
    with pytest.raises(ValidationFailed) as error:
        criteria_validate(_with(mutate))
    assert field in error.value.fields, error.value.fields
    assert error.value.code == "invalid_criteria"


def test_reported_metrics_are_accepted_by_name():
    document = _with(
        lambda d: d["criteria"].append({"metric": "reported:tokens_per_s", "kind": "absolute", "threshold": 10})
    )
    assert criteria_validate(document)["criteria"][1]["metric"] == "reported:tokens_per_s"


def test_tiers_need_a_speedup_criterion():
    document = _with(lambda d: d.update(criteria=[{"metric": "peak_memory", "kind": "no_worse", "tolerance": 0.1}]))
    with pytest.raises(ValidationFailed) as error:
        criteria_validate(document)
    assert "criteria.tiers" in error.value.fields


def test_every_problem_is_named_at_once():
    def two_problems(document):
        document["criteria"][0].update(metric="vibes")
        document["tiers"][1].update(fraction=0.4)

    with pytest.raises(ValidationFailed) as error:
        criteria_validate(_with(two_problems))
    assert {"criteria.criteria[0].metric", "criteria.tiers[1].fraction"} <= set(error.value.fields)


def test_the_api_and_the_runner_share_one_definition():
    """What the API stores is exactly what the runner parses, and the runner refuses what the API refuses."""
    normalized = criteria_validate(CRITERIA)
    assert Criteria.from_dict(normalized, require_tiers=True).to_dict() == normalized
    assert criteria_validate(normalized) == normalized
    refused = _with(lambda d: d["criteria"][0].update(threshold=1.0))  # "at least 1x" is no speedup
    with pytest.raises(CriteriaError) as problem:
        Criteria.from_dict(refused)
    assert problem.value.field == "criteria[0].threshold"
    with pytest.raises(ValidationFailed):
        criteria_validate(refused)
