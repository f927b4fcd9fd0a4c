"""The decision procedure on seeded synthetic data (the error-rate study is bench/verification_decision.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from verification.runner import stats

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
def test_leaving_out_far_pairs_keeps_alpha_under_heavy_tails(noise):
    # The exclusion rule sees sizes only; even where it fires often the error stays at alpha per side.
    rng = np.random.default_rng(12)
    shape = (6000, 40)
    if noise == "cauchy":
        margins = rng.standard_cauchy(size=shape)
    else:  # 10 % of pairs twenty times as noisy
        margins = np.where(rng.random(shape) < 0.1, 20.0, 1.0) * rng.normal(size=shape)
    assert (~stats.kept_pairs(margins)).mean() > 0.01
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


@pytest.mark.parametrize(("speedup", "expected", "minimum_rate"), [(2.0, 1, 0.99), (1.0, -1, 0.99)])
def test_clear_cases_are_decided_quickly(speedup, expected, minimum_rate):
    looks = stats.plan_looks(40)
    rng = np.random.default_rng(7)
    decision, pairs = stats.run_sequential(_paired_margins(rng, 2000, 40, speedup, 0.05), looks)
    assert (decision == expected).mean() >= minimum_rate
    assert pairs.mean() <= 8


def test_boundary_case_rarely_passes():
    looks = stats.plan_looks(40)
    rng = np.random.default_rng(8)
    decision, _ = stats.run_sequential(_paired_margins(rng, 4000, 40, 1.5, 0.05), looks)
    assert (decision > 0).mean() <= 0.06


def test_one_huge_outlier_cannot_manufacture_a_pass():
    looks = stats.plan_looks(40)
    margins = np.full(12, -0.02) + np.linspace(-0.01, 0.01, 12)
    margins[3] = 5.0  # one wildly "fast" pair
    look = next(lk for lk in looks if lk.pairs == 12)
    assert stats.evaluate_look(margins, look).decision != stats.PASS


def test_p_values_agree_with_the_decision():
    look = stats.plan_looks(40)[0]
    strong = np.array([0.3, 0.31, 0.29, 0.3])
    outcome = stats.evaluate_look(strong, look)
    assert outcome.decision == stats.PASS
    assert outcome.p_pass <= look.level < outcome.p_fail


def test_values_exactly_at_the_threshold_decide_nothing():
    for look in stats.plan_looks(12):
        outcome = stats.evaluate_look(np.zeros(look.pairs), look)
        assert outcome.decision == stats.UNDECIDED
    decision, pairs = stats.run_sequential(np.zeros((3, 12)), stats.plan_looks(12))
    assert (decision == 0).all() and (pairs == 12).all()


def test_far_pairs_are_left_out_by_size_alone():
    margins = np.array([[0.05, -0.02, 0.04, 0.9, 0.03, -0.01, 0.06, 0.02, 0.05, 0.04]])
    keep = stats.kept_pairs(margins)
    assert keep.tolist() == [[True, True, True, False, True, True, True, True, True, True]]
    # The rule never looks at signs: flipping every sign keeps the same pairs.
    assert (stats.kept_pairs(-margins) == keep).all()
    # Nothing is left out when most margins sit exactly at the threshold,
    assert stats.kept_pairs(np.array([[0.0] * 6 + [0.5, 0.01]])).all()
    # nor below the rank test's first look (one pair of four is no outlier).
    assert stats.kept_pairs(np.array([[0.05, 0.04, 0.06, -0.9]])).all()


def test_one_slow_candidate_run_does_not_block_a_clear_pass():
    rng = np.random.default_rng(21)
    margins = rng.normal(0.12, 0.03, size=12)
    margins[2] = -0.9  # the candidate's run of pair 3 hit a noisy neighbour
    look = next(lk for lk in stats.plan_looks(40) if lk.pairs == 12)
    outcome = stats.evaluate_look(margins, look)
    assert outcome.decision == stats.PASS
    assert outcome.outlier_pairs == 1
    # With the pair kept, the rank test could not pass at this look: the exclusion is what decides.
    w_plus = float(stats.wilcoxon_positive_rank_sums(margins[None, :])[0])
    assert w_plus < look.wilcoxon_critical


def test_far_pairs_that_are_not_rare_all_stay_in():
    # 3 of 12 far pairs (25 %) are the candidate's behaviour, not noise: none is left out.
    margins = np.array([0.03] * 9 + [-0.7] * 3) + np.linspace(-0.005, 0.005, 12)
    assert stats.kept_pairs(margins[None, :]).all()
    look = next(lk for lk in stats.plan_looks(40) if lk.pairs == 12)
    assert stats.evaluate_look(margins, look).decision != stats.PASS


@pytest.mark.parametrize("slow_share", [0.55, 0.6])
def test_a_candidate_far_too_slow_in_most_runs_does_not_pass(slow_share):
    # Fast enough (barely) in the rest of its runs, 2x slower than the bar in most: its median
    # margin is below 0, so at most alpha of such candidates may pass.
    rng = np.random.default_rng(3)
    margins = np.where(rng.random((4000, 40)) < slow_share, -0.7, 0.02) + rng.normal(0, 0.01, (4000, 40))
    decision, _ = stats.run_sequential(margins, stats.plan_looks(40))
    assert (decision > 0).mean() <= 0.05
