"""The decision procedure on seeded synthetic data (the error-rate study is bench/verification_decision.py)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from verification.runner import stats
from verification.runner.criteria import Criteria
from verification.runner.decision import Pair, SequentialDecision
from verification.runner.measure import RunRecord

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox


def test_student_t_tail_matches_known_values():
    assert stats.student_t_sf(2.0, 10) == pytest.approx(0.036694, abs=1e-5)
    assert stats.student_t_sf(-2.0, 10) == pytest.approx(1 - 0.036694, abs=1e-5)
    assert stats.student_t_isf(0.025, 5) == pytest.approx(2.570582, abs=1e-5)


def test_wilcoxon_null_distribution_is_exact():
    tail = stats.wilcoxon_null_upper_tail(5)
    assert tail[0] == pytest.approx(1.0)
    assert tail[15] == pytest.approx(1 / 32)  # all five ranks positive
    assert tail[14] == pytest.approx(2 / 32)
    assert stats.wilcoxon_critical_value(5, 0.05) == 15


def test_hodges_lehmann_estimate_and_interval():
    assert stats.hodges_lehmann([1.0, 2.0, 3.0]) == pytest.approx(2.0)
    rng = np.random.default_rng(4)
    covered = 0
    for _ in range(300):
        sample = rng.normal(0.3, 1.0, size=15)
        low, high = stats.hodges_lehmann_interval(sample, 0.9)
        covered += low <= 0.3 <= high
    assert 0.84 <= covered / 300 <= 0.97


def test_looks_are_calibrated_to_alpha_on_fresh_null_data():
    looks = stats.plan_looks(24, alpha=0.05)
    assert [look.pairs for look in looks][-1] == 24
    assert sum(look.level for look in looks) > 0.05  # calibrated, not Bonferroni
    rng = np.random.default_rng(99)
    decision, _ = stats.run_sequential(rng.standard_t(5, size=(6000, 24)) * 0.07, looks)
    assert (decision > 0).mean() <= 0.06
    assert (decision < 0).mean() <= 0.06


@pytest.mark.parametrize("noise", ["cauchy", "contaminated"])
def test_heavy_tails_keep_alpha(noise):
    rng = np.random.default_rng(12)
    shape = (6000, 40)
    if noise == "cauchy":
        margins = rng.standard_cauchy(size=shape)
    else:  # 10 % of pairs twenty times as noisy
        margins = np.where(rng.random(shape) < 0.1, 20.0, 1.0) * rng.normal(size=shape)
    decision, _ = stats.run_sequential(margins, stats.plan_looks(40))
    assert (decision > 0).mean() <= 0.055
    assert (decision < 0).mean() <= 0.055


def _paired_margins(
    rng: np.random.Generator, trials: int, pairs: int, speedup: float, cv: float, threshold: float = 1.5
) -> np.ndarray:
    sigma = math.sqrt(math.log1p(cv * cv))
    log_base = rng.normal(0, sigma, size=(trials, pairs))
    log_cand = rng.normal(0, sigma, size=(trials, pairs)) - math.log(speedup)
    outliers = rng.random((trials, pairs)) < 0.03
    log_cand = np.where(outliers, log_cand + math.log(2.5), log_cand)
    return log_base - log_cand - math.log(threshold)


def _first_pass_look(pairs: int = 40) -> stats.Look:
    return next(lk for lk in stats.plan_looks(pairs) if lk.pass_critical <= lk.pairs)


@pytest.mark.parametrize(("speedup", "expected", "maximum_pairs"), [(2.0, 1, stats.MIN_PASS_PAIRS + 1), (1.0, -1, 8)])
def test_clear_cases_are_decided_quickly(speedup, expected, maximum_pairs):
    looks = stats.plan_looks(40)
    rng = np.random.default_rng(7)
    decision, pairs = stats.run_sequential(_paired_margins(rng, 2000, 40, speedup, 0.05), looks)
    assert (decision == expected).mean() >= 0.99
    assert pairs.mean() <= maximum_pairs


def test_boundary_case_rarely_passes():
    looks = stats.plan_looks(40)
    rng = np.random.default_rng(8)
    decision, _ = stats.run_sequential(_paired_margins(rng, 4000, 40, 1.5, 0.05), looks)
    assert (decision > 0).mean() <= 0.06


def test_one_huge_outlier_cannot_manufacture_a_pass():
    look = _first_pass_look()
    margins = np.full(look.pairs, -0.02) + np.linspace(-0.01, 0.01, look.pairs)
    margins[3] = 5.0  # one wildly "fast" pair
    assert stats.evaluate_look(margins, look).decision != stats.PASS


def test_p_values_agree_with_the_decision():
    look = _first_pass_look()
    strong = np.linspace(0.28, 0.32, look.pairs)
    outcome = stats.evaluate_look(strong, look)
    assert outcome.decision == stats.PASS
    assert outcome.p_pass <= look.level < outcome.p_fail


def test_values_exactly_at_the_threshold_decide_nothing():
    for look in stats.plan_looks(16):
        outcome = stats.evaluate_look(np.zeros(look.pairs), look)
        assert outcome.decision == stats.UNDECIDED
    decision, pairs = stats.run_sequential(np.zeros((3, 16)), stats.plan_looks(16))
    assert (decision == 0).all() and (pairs == 16).all()


def test_no_pass_before_the_minimum_but_the_budget_itself_may_pass():
    looks = stats.plan_looks(40)
    assert all(lk.pass_critical > lk.pairs for lk in looks if lk.pairs < stats.MIN_PASS_PAIRS)
    assert any(lk.fail_critical <= lk.pairs for lk in looks if lk.pairs < stats.MIN_PASS_PAIRS)
    small = stats.plan_looks(8)
    assert small[-1].pairs == 8 and small[-1].pass_critical <= 8


def test_the_spending_is_exact_for_the_sign_test():
    looks = stats.plan_looks(40)
    counts = [lk.pairs for lk in looks]
    for criticals in ([lk.pass_critical for lk in looks], [lk.fail_critical for lk in looks]):
        exact = stats.sequential_sign_error(counts, criticals)
        assert 0.045 <= exact <= stats.DEFAULT_ALPHA
    # The dynamic programme against brute force on fair coins: the count-only rule matches it, and
    # the full rule (with the spread check) passes no more often.
    pass_criticals = np.array([lk.pass_critical for lk in looks])
    exact = stats.sequential_sign_error(counts, list(pass_criticals))
    rng = np.random.default_rng(30)
    coins = rng.random((200_000, 40)) < 0.5
    above = np.cumsum(coins, axis=1)[:, np.array(counts) - 1]
    crossed = (above >= pass_criticals[None, :]).any(axis=1).mean()
    assert abs(crossed - exact) <= 4 * math.sqrt(exact * (1 - exact) / coins.shape[0])
    decision, _ = stats.run_sequential(np.where(coins, 1.0, -1.0), looks)
    assert (decision > 0).mean() <= crossed


def test_one_slow_candidate_run_does_not_block_a_clear_pass():
    rng = np.random.default_rng(21)
    look = _first_pass_look()
    margins = rng.normal(0.12, 0.03, size=look.pairs)
    margins[2] = -0.9  # the candidate's run of pair 3 hit a noisy neighbour
    assert stats.evaluate_look(margins, look).decision == stats.PASS


def test_far_slow_pairs_that_are_not_rare_block_a_pass():
    look = _first_pass_look()
    margins = np.array([0.03] * (look.pairs - 4) + [-0.7] * 4) + np.linspace(-0.005, 0.005, look.pairs)
    assert stats.evaluate_look(margins, look).decision != stats.PASS


@pytest.mark.parametrize("slow_share", [0.55, 0.6])
def test_a_candidate_far_too_slow_in_most_runs_does_not_pass(slow_share):
    # Fast enough (barely) in the rest of its runs, 2x slower than the bar in most: its median
    # margin is below 0, so at most alpha of such candidates may pass.
    rng = np.random.default_rng(3)
    margins = np.where(rng.random((4000, 40)) < slow_share, -0.7, 0.02) + rng.normal(0, 0.01, (4000, 40))
    decision, _ = stats.run_sequential(margins, stats.plan_looks(40))
    assert (decision > 0).mean() <= 0.05


# ---------------------------------------------------------------- adversarial shapes (issue 11)
# Each of these passed more than alpha under the signed-rank rule with its size-only outlier rule.

ONE_X = math.log(1.0 / 1.5)  # margin of a run at 1.0x against the 1.5x bar
TWO_AND_A_HALF_X = math.log(2.5 / 1.5)


@pytest.mark.parametrize("slow_share", [0.5, 0.55, 0.6])
def test_a_bimodal_candidate_passes_only_if_most_of_its_pairs_beat_the_bar(slow_share):
    # At 1.0x in slow_share of its runs and 2.5x in the others: the median per-pair speedup is at or
    # below the bar although the pseudo-median (what the rank test tests) is well above it.
    rng = np.random.default_rng(11)
    shape = (6000, 40)
    modes = np.where(rng.random(shape) < slow_share, ONE_X, TWO_AND_A_HALF_X)
    margins = modes + rng.normal(0, math.sqrt(2 * math.log1p(0.05**2)), shape)
    decision, _ = stats.run_sequential(margins, stats.plan_looks(40))
    assert (decision > 0).mean() <= 0.05


@pytest.mark.parametrize("slow_share", [0.05, 0.1, 0.15])
def test_far_slow_pairs_cannot_be_dropped_to_pass_at_the_bar(slow_share):
    # A share of far-slow pairs (a third of the bar) and the rest placed so that the median margin is
    # exactly 0: a rule that drops far pairs by size alone drops mostly the slow ones.
    rng = np.random.default_rng(12)
    shape = (8000, 40)
    sd = 0.07
    shift = sd * NormalDist().inv_cdf(0.5 / (1 - slow_share))
    margins = np.where(rng.random(shape) < slow_share, math.log(1 / 3), rng.normal(shift, sd, shape))
    decision, _ = stats.run_sequential(margins, stats.plan_looks(40))
    assert (decision > 0).mean() <= 0.05


@pytest.mark.parametrize("fast_runs", [4, 10])
def test_fast_first_and_slower_afterwards_does_not_pass(fast_runs):
    # 2x for its first runs (a warm page cache, a cool device), 1.2x afterwards.
    rng = np.random.default_rng(13)
    shape = (4000, 40)
    speed = np.where(np.arange(40) < fast_runs, math.log(2.0 / 1.5), math.log(1.2 / 1.5))
    margins = speed[None, :] + rng.normal(0, 0.07, shape)
    decision, _ = stats.run_sequential(margins, stats.plan_looks(40))
    assert (decision > 0).mean() <= 0.05


def test_the_interval_covers_the_median_at_its_stated_level_and_agrees_with_the_decision():
    rng = np.random.default_rng(14)
    looks = stats.plan_looks(40)
    margins = rng.normal(0.0, 0.07, size=(8000, 40))  # a true 1.5x: the median margin is 0
    decision, _, low, high = stats.run_sequential_with_bounds(margins, looks)
    # Simultaneous over the looks: each side misses with at most its alpha.
    assert ((low <= 0) & (high >= 0)).mean() >= 1 - 2 * stats.DEFAULT_ALPHA - 0.006
    assert ((decision > 0) == (low > 0)).all() and ((decision < 0) == (high < 0)).all()
    inconclusive = decision == 0
    assert ((low[inconclusive] <= 0) & (high[inconclusive] >= 0)).all()


def _records(baseline_seconds: float, candidate_seconds: float, index: int) -> Pair:
    def record(role: str, seconds: float) -> RunRecord:
        return RunRecord(role=role, phase="measure", pair=index, position=0, input_ids=[], wall_seconds=seconds)

    return Pair(index, record("baseline", baseline_seconds), record("candidate", candidate_seconds))


@pytest.mark.parametrize(("speedup", "drift_per_pair"), [(1.5, 0.0), (1.55, 0.0), (1.5, 0.01), (1.6, -0.01)])
def test_the_reported_interval_agrees_with_every_decision(speedup, drift_per_pair):
    # The report's interval once shown as "90%" was taken at the stopping time, so an INCONCLUSIVE
    # could show an interval entirely above the bar. Now PASS iff it lies above, FAIL iff below.
    criteria = Criteria.from_dict({"criteria": [{"metric": "wall_time", "kind": "speedup", "threshold": 1.5}]})
    looks = stats.plan_looks(16)
    rng = np.random.default_rng(15)
    seen = set()
    for _ in range(150):
        state = SequentialDecision(criteria, looks, {}, confidence=0.9)
        log_ratios = rng.normal(math.log(speedup), 0.07, size=16) + drift_per_pair * np.arange(16)
        pairs: list[Pair] = []
        for ratio in log_ratios:
            pairs.append(_records(math.exp(ratio), 1.0, len(pairs)))
            state.update(pairs)
            if state.all_decided():
                break
        result = state.states[0].to_dict()
        low, high = result["interval"]
        seen.add(result["decision"])
        if result["decision"] == "PASS":
            assert low > 1.5
        elif result["decision"] == "FAIL":
            assert high < 1.5
        else:
            assert low <= 1.5 <= high, (result["decision"], low, high)
        assert low <= result["estimate"] <= high
        assert 0.5 < result.get("interval_confidence", 0) <= 1
    assert "INCONCLUSIVE" in seen


def _memory_pair(index: int, candidate_bytes: int) -> Pair:
    def record(role: str, seconds: float, peak: int) -> RunRecord:
        return RunRecord(
            role=role,
            phase="measure",
            pair=index,
            position=0,
            input_ids=[],
            wall_seconds=seconds,
            peak_memory_bytes=peak,
        )

    return Pair(index, record("baseline", 2.0, 100_000_000), record("candidate", 1.0, candidate_bytes))


@pytest.mark.parametrize(
    "heavy_pairs",
    [
        pytest.param(lambda index: index >= 4 and index % 3 == 0, id="a third of the later runs far larger"),
        pytest.param(lambda index: index >= 4, id="every run after the first four far larger"),
    ],
)
def test_peak_memory_holds_over_every_run_measured_not_only_the_first_look(heavy_pairs):
    """Memory was decided once, at the first look (4 pairs), and never looked at again while the speedup
    went on to 13 pairs: a candidate lean for its first runs and 10x larger afterwards passed, its report
    showing a maximum it had exceeded."""
    criteria = Criteria.from_dict(
        {
            "criteria": [
                {"metric": "wall_time", "kind": "speedup", "threshold": 1.5},
                {"metric": "peak_memory", "kind": "no_worse", "tolerance": 0.25},
            ]
        }
    )
    state = SequentialDecision(criteria, stats.plan_looks(16), {}, confidence=0.9)
    pairs: list[Pair] = []
    for index in range(16):
        pairs.append(_memory_pair(index, 1_000_000_000 if heavy_pairs(index) else 100_000_000))
        state.update(pairs)
        if state.all_decided():
            break
    memory = state.states[1].to_dict()
    assert state.overall() == "FAIL"
    assert memory["decision"] == "FAIL" and memory["detail"]["candidate_max_bytes"] == 1_000_000_000
    assert memory["decided_at_pairs"] == len(pairs) > 4


def test_peak_memory_that_stays_within_tolerance_passes_with_the_speedup():
    criteria = Criteria.from_dict(
        {
            "criteria": [
                {"metric": "wall_time", "kind": "speedup", "threshold": 1.5},
                {"metric": "peak_memory", "kind": "no_worse", "tolerance": 0.25},
            ]
        }
    )
    state = SequentialDecision(criteria, stats.plan_looks(16), {}, confidence=0.9)
    pairs: list[Pair] = []
    for index in range(16):
        pairs.append(_memory_pair(index, 110_000_000))
        state.update(pairs)
        if state.all_decided():
            break
    assert state.overall() == "PASS" and len(pairs) == 13
    assert state.states[1].to_dict()["decided_at_pairs"] == 13
