"""The calibration's smallest verifiable speedup is what the runner's own decision procedure delivers:
a candidate that beats the bar by exactly that factor PASSes with the stated probability, checked by
running the decision (stats.run_sequential) on simulated verifications with other seeds, on normal noise
and on bench/verification_decision.py's machine models. Plain Python, no sandbox."""

from __future__ import annotations

import importlib.util
import math
import sys
import time

import numpy as np
import pytest
from runner_testlib import REPO

from verification.runner import calibration, stats
from verification.runner.calibration import margin_noise, pass_share_needed, smallest_verifiable_factor

TRIALS = 4000
BUDGET = 40
# The figure aims at 90%; its own search and this check each carry about 0.5 points of simulation error.
TOLERANCE = 0.025


def pass_rate(margins: np.ndarray, budget: int = BUDGET) -> float:
    decision, _ = stats.run_sequential(margins, stats.plan_looks(budget))
    return float(np.mean(decision == 1))


def normal_margins(seed: int, factor: float, noise: float, budget: int = BUDGET) -> np.ndarray:
    return np.random.default_rng(seed).normal(math.log(factor), noise, size=(TRIALS, budget))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "verification_decision_bench", REPO / "bench" / "verification_decision.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.parametrize("noise", [0.02, 0.05, 0.15])
@pytest.mark.parametrize("budget", [40, 24])
def test_a_candidate_at_the_figure_passes_as_often_as_stated_on_normal_noise(noise, budget):
    factor = smallest_verifiable_factor(noise, budget=budget)
    assert abs(pass_rate(normal_margins(7, factor, noise, budget), budget) - 0.9) <= TOLERANCE
    # It is the smallest such factor, not merely one that passes: a tenth of the way closer to the bar
    # already passes markedly less often.
    closer = math.exp(0.9 * math.log(factor))
    assert pass_rate(normal_margins(8, closer, noise, budget), budget) < 0.9 - 2 * TOLERANCE


@pytest.mark.parametrize("model", ["project", "independent"])
@pytest.mark.parametrize("cv", [0.02, 0.05, 0.15])
def test_a_candidate_at_the_figure_passes_as_often_as_stated_on_the_benchs_machines(bench, model, cv):
    """Drifting machines with 3% far runs: the A/A's robust spread, measured on a long A/A of the same
    machine, gives the factor at which the bench's own candidates pass 90% of the time."""
    aa, _ = bench.margins_for(
        np.random.default_rng(3), model, bench.Row("A/A", bench.constant(bench.THRESHOLD), cv=cv), 200
    )
    noise = margin_noise(aa.ravel())
    factor = smallest_verifiable_factor(noise, budget=bench.BUDGET_PAIRS)
    candidate = bench.Row("at the figure", bench.constant(bench.THRESHOLD * factor), cv=cv)
    margins, _ = bench.margins_for(np.random.default_rng(11), model, candidate, TRIALS)
    assert abs(pass_rate(margins, bench.BUDGET_PAIRS) - 0.9) <= 2 * TOLERANCE
    # The sample standard deviation, which the far runs inflate, would overstate the figure.
    inflated = smallest_verifiable_factor(float(np.std(aa, ddof=1)), budget=bench.BUDGET_PAIRS)
    assert inflated > factor


def test_the_figure_grows_with_noise_and_shrinks_with_budget():
    by_noise = [smallest_verifiable_factor(noise, budget=BUDGET) for noise in (0.0, 0.01, 0.03, 0.1, 0.3)]
    assert by_noise[0] == 1.0
    assert all(a < b for a, b in zip(by_noise, by_noise[1:]))
    by_budget = [smallest_verifiable_factor(0.05, budget=budget) for budget in (8, 13, 24, 40)]
    assert all(a > b for a, b in zip(by_budget, by_budget[1:]))


def test_the_share_of_pairs_that_must_beat_the_bar_is_the_decisions():
    share = pass_share_needed(BUDGET)
    assert 0.6 < share < 0.9
    # Signs alone decide: at that share the decision passes 90% of the time, a little below it less.
    signs = np.random.default_rng(5).random((TRIALS, BUDGET))
    assert abs(pass_rate(np.where(signs < share, 1.0, -1.0)) - 0.9) <= TOLERANCE
    assert pass_rate(np.where(signs < share - 0.03, 1.0, -1.0)) < 0.9 - TOLERANCE


def test_a_budget_too_small_to_pass_has_no_figure():
    # Four pairs all beating the bar happen by chance 1 time in 16, more than alpha (5%): no PASS at all.
    assert pass_share_needed(4) is None
    assert smallest_verifiable_factor(0.05, budget=4) is None
    # Six pairs can pass, only when (nearly) every pair beats the bar.
    assert pass_share_needed(6) > 0.95


def test_the_figure_is_deterministic_and_cheap():
    pass_share_needed.cache_clear()
    started = time.process_time()
    first = pass_share_needed(BUDGET)
    assert time.process_time() - started < 1.0  # it runs inside every job's calibration
    pass_share_needed.cache_clear()
    assert pass_share_needed(BUDGET) == first


def test_the_noise_of_a_few_normal_pairs_is_not_biased_low():
    """Eight A/A pairs (the platform's default): the median absolute deviation alone averages 12% low."""
    samples = np.random.default_rng(4).normal(0.0, 0.05, size=(20_000, 8))
    noise = np.array([margin_noise(sample) for sample in samples])
    assert abs(noise.mean() / 0.05 - 1.0) < 0.035


def test_the_noise_is_robust_to_a_few_far_pairs_but_cautious_with_few_pairs():
    rng = np.random.default_rng(2)
    pairs = np.append(rng.normal(0.0, 0.05, 30), [math.log(3.0), math.log(2.5)])
    assert margin_noise(pairs) == pytest.approx(0.05, rel=0.3)
    assert float(np.std(pairs, ddof=1)) > 3 * margin_noise(pairs)
    few = np.array([0.0, 0.01, math.log(2.0)])
    assert margin_noise(few) == pytest.approx(float(np.std(few, ddof=1)))
    assert math.isnan(margin_noise(np.array([0.1])))
    assert calibration.MIN_ROBUST_VALUES == 5


def _aa_run(role: str, pair: int, scale: float) -> dict:
    """A run's report entry as the runner writes it (measure.RunRecord.to_dict), the figures scaled."""
    return {
        "role": role,
        "phase": "measure",
        "pair": pair,
        "wall_seconds": 1.0 * scale,
        "cpu_seconds": 0.9 * scale,
        "peak_memory_bytes": 10_000_000,
        "throughput": 40.0 / scale,
        "latencies_seconds": sorted(0.01 * scale * (1 + i / 40) for i in range(40)),
        "reported": {"gflops": [2.0 / scale, 2.2 / scale, 1.8 / scale]},
    }


# The candidate role's figures are 1.1x the baseline's times, so 1/1.1x its rates.
SLOWER, LOWER_RATE = 1 / 1.1, 1.1


@pytest.mark.parametrize(
    "criterion,baseline_figure,baseline_over_candidate",
    [
        ({"metric": "wall_time", "statistic": "median", "kind": "speedup", "threshold": 1.5}, 1.0, SLOWER),
        # p95 of 40 requests: the second slowest (the higher value at rank 0.95 x 39).
        (
            {"metric": "latency", "statistic": "p95", "kind": "absolute", "threshold": 0.02},
            0.01 * (1 + 38 / 40),
            SLOWER,
        ),
        (
            {"metric": "latency", "statistic": "median", "kind": "speedup", "threshold": 1.5},
            0.01 * (1 + 19.5 / 40),
            SLOWER,
        ),
        ({"metric": "reported:gflops", "statistic": "mean", "kind": "no_worse", "tolerance": 0.05}, 2.0, LOWER_RATE),
        ({"metric": "throughput", "statistic": "median", "kind": "absolute", "threshold": 30}, 40.0, LOWER_RATE),
    ],
)
def test_every_measured_criterion_is_calibrated_on_the_figure_the_decision_uses(
    criterion, baseline_figure, baseline_over_candidate
):
    from verification.runner.criteria import Criteria

    (parsed,) = Criteria.from_dict({"criteria": [criterion], "correctness": {"mode": "exact"}}).criteria
    measured = [run for pair in range(4) for run in (_aa_run("baseline", pair, 1.0), _aa_run("candidate", pair, 1.1))]
    values = calibration._aa_values(measured, parsed)
    assert values is not None, criterion  # a reported metric was "not measured in the A/A run" before
    baseline, candidate = values
    assert baseline == pytest.approx([baseline_figure] * 4)
    assert baseline / candidate == pytest.approx([baseline_over_candidate] * 4)
