"""seqeval.stats on hand-made score matrices with known answers, and against rliable."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seqeval import stats


def test_iqm_trims_a_quarter_from_each_end_of_all_scores_pooled():
    scores = np.array([[8.0, 1.0, 6.0, 3.0], [2.0, 7.0, 4.0, 5.0]])  # 1..8 scattered
    assert stats.iqm(scores) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    # n = 6: int(1.5) = 1 cut from each end -> mean of 2..5.
    assert stats.iqm(np.arange(1.0, 7.0).reshape(2, 3)) == pytest.approx(3.5)


def test_median_and_mean_are_over_per_task_means():
    scores = np.array([[0.0, 10.0, 100.0], [20.0, 30.0, 200.0]])  # task means 10, 20, 150
    assert stats.median(scores) == pytest.approx(20.0)
    assert stats.mean(scores) == pytest.approx(60.0)


def test_optimality_gap_clips_scores_above_the_threshold():
    scores = np.array([[50.0, 120.0], [100.0, 30.0]])  # clipped: 50, 100, 100, 30 -> mean 70
    assert stats.optimality_gap(scores) == pytest.approx(30.0)
    # threshold 50: clipped 50, 50, 50, 30 -> 50 - 45
    assert stats.optimality_gap(scores, threshold=50.0) == pytest.approx(5.0)
    assert stats.aggregate(scores, "optimality_gap") == pytest.approx(30.0)


def test_probability_of_improvement_counts_ties_as_half():
    x = np.array([[1.0], [2.0]])
    y = np.array([[2.0], [0.0]])
    # pairs: 1>2 no, 1>0 yes, 2=2 half, 2>0 yes -> 2.5 / 4
    assert stats.probability_of_improvement(x, y) == pytest.approx(0.625)
    assert stats.probability_of_improvement(y, x) == pytest.approx(0.375)
    assert stats.probability_of_improvement(x, x) == pytest.approx(0.5)


def test_probability_of_improvement_averages_tasks_and_allows_different_run_counts():
    x = np.array([[10.0, 0.0], [11.0, 0.0], [12.0, 0.0]])  # 3 runs
    y = np.array([[5.0, 1.0], [6.0, 1.0]])  # 2 runs: x always wins task 0, always loses task 1
    assert stats.probability_of_improvement(x, y) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="tasks"):
        stats.probability_of_improvement(x, y[:, :1])


def test_bootstrap_of_two_runs_on_one_task_has_the_runs_as_its_extreme_percentiles():
    # Resampled means take a (p 1/4), (a+b)/2 (p 1/2), b (p 1/4): the 2.5th and 97.5th
    # percentiles are a and b.
    ci = stats.aggregate_intervals(np.array([[10.0], [30.0]]), names=["mean"], reps=4000)["mean"]
    assert (ci.point, ci.low, ci.high) == (20.0, 10.0, 30.0)


def test_bootstrap_is_degenerate_with_one_run_per_task_and_resamples_within_tasks():
    # One run per task: every resample is the matrix itself, so the CI collapses. This would
    # fail if runs were resampled across tasks.
    scores = np.array([[0.0, 50.0, 100.0, 80.0]])
    for name, ci in stats.aggregate_intervals(scores, reps=1000).items():
        assert ci.low == pytest.approx(ci.point) and ci.high == pytest.approx(ci.point), name


def test_bootstrap_is_seeded_and_brackets_the_point_estimate():
    rng = np.random.default_rng(3)
    scores = rng.normal(50.0, 15.0, size=(5, 6))
    a = stats.aggregate_intervals(scores, reps=3000, seed=7)
    b = stats.aggregate_intervals(scores, reps=3000, seed=7)
    c = stats.aggregate_intervals(scores, reps=3000, seed=8)
    assert a == b
    assert a["iqm"].low != c["iqm"].low
    for ci in a.values():
        assert ci.low < ci.point < ci.high


def test_bootstrap_works_in_blocks(monkeypatch):
    # Shrinking the block bound forces many blocks; the draws are the same stream either way.
    scores = np.random.default_rng(0).normal(size=(4, 3))
    whole = stats.bootstrap_aggregates(scores, reps=500, seed=1)
    monkeypatch.setattr(stats, "_BLOCK_ELEMENTS", 7 * 12)
    blocked = stats.bootstrap_aggregates(scores, reps=500, seed=1)
    for name in stats.AGGREGATES:
        np.testing.assert_allclose(blocked[name], whole[name])


def test_probability_of_improvement_interval():
    x = np.array([[1.0, 5.0], [2.0, 5.0]])
    y = np.array([[0.0, 5.0]])
    # task 0: x always wins (1); task 1: always a tie (1/2) -> 0.75 in every resample.
    ci = stats.probability_of_improvement_interval(x, y, reps=2000)
    assert (ci.point, ci.low, ci.high) == (0.75, 0.75, 0.75)
    # One task, runs {0, 2} vs {1}: resamples give P = 0 (p 1/4), 1/2 (p 1/2), 1 (p 1/4).
    ci = stats.probability_of_improvement_interval([[0.0], [2.0]], [[1.0]], reps=4000)
    assert (ci.point, ci.low, ci.high) == (0.5, 0.0, 1.0)


def test_t_interval():
    ci = stats.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3.0)  # t_{0.975, 2} * s / sqrt(n), s = 1
    assert ci.point == pytest.approx(2.0)
    assert (ci.low, ci.high) == pytest.approx((2.0 - half, 2.0 + half))
    one = stats.t_interval([5.0, math.nan])
    assert one.point == 5.0 and math.isnan(one.low) and math.isnan(one.high)
    assert math.isnan(stats.t_interval([]).point)


def test_normalized_auc():
    # 100 everywhere means expert from the first sample: exactly 100, wherever the evaluations.
    assert stats.normalized_auc([5000, 10000, 20000], [100.0] * 3, end=20000) == 100.0
    # Held at 0 on [0, 10], ramp to 100 on [10, 20] (area 500), held at 100 on [20, 40] (2000).
    assert stats.normalized_auc([20, 10], [100.0, 0.0], end=40) == pytest.approx(2500 / 40)
    # A ramp evaluated from 0 to N averages half its height; a window restricts the axis.
    assert stats.normalized_auc([0, 100], [0.0, 80.0], end=100) == pytest.approx(40.0)
    assert stats.normalized_auc([0, 100, 200], [0.0, 80.0, 0.0], start=100, end=200) == (
        pytest.approx(40.0))
    with pytest.raises(ValueError):
        stats.normalized_auc([1], [1.0], end=0)


def test_samples_to_fraction_is_the_first_evaluation_at_90_percent_of_final():
    assert stats.samples_to_fraction([10, 20, 30, 40], [0.0, 50.0, 95.0, 100.0]) == 30
    # Noisy: an early peak above the target counts (first reach, not "stays above").
    assert stats.samples_to_fraction([10, 20, 30, 40], [0.0, 95.0, 50.0, 100.0]) == 20
    # On raw returns a baseline other than 0: target = -100 + 0.9 * (100 - -100) = 80.
    assert stats.samples_to_fraction([1, 2, 3], [-100.0, 70.0, 100.0], baseline=-100.0) == 3
    # A final score at or below the baseline (random) has no improvement to take 90% of.
    assert math.isnan(stats.samples_to_fraction([1, 2], [10.0, -50.0]))
    assert math.isnan(stats.samples_to_fraction([1, 2], [10.0, 0.0]))
    assert stats.samples_to_fraction([1, 2], [-10.0, 0.5]) == 2


def test_rejects_bad_matrices():
    with pytest.raises(ValueError):
        stats.iqm(np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        stats.mean(np.array([[1.0, math.nan]]))


# ---------------------------------------------------------------------------------------------
# Against rliable 1.2.0 (in the `test` extra): same point estimates, CIs within Monte-Carlo error.


def _rliable():
    pytest.importorskip("pandas")
    library = pytest.importorskip("rliable.library")
    metrics = pytest.importorskip("rliable.metrics")
    return library, metrics


def _mc_tolerance(samples: np.ndarray) -> float:
    # rliable runs 2,000-5,000 resamples, so its percentiles move by ~0.05 bootstrap standard
    # deviations between seeds; 0.3 sd is ~6 of those standard errors.
    return 0.3 * float(np.std(samples)) + 1e-9


def test_aggregates_agree_with_rliable():
    library, metrics = _rliable()
    rng = np.random.default_rng(11)
    scores = rng.normal([30.0, 60.0, 90.0, 110.0], 15.0, size=(5, 4))
    scores[:, 2] = np.round(scores[:, 2])  # ties

    def reference(s):
        return np.array([metrics.aggregate_iqm(s), metrics.aggregate_median(s),
                         metrics.aggregate_mean(s), metrics.aggregate_optimality_gap(s, 100.0)])

    np.random.seed(0)  # rliable draws from numpy's global generator
    points, intervals = library.get_interval_estimates({"a": scores}, reference, reps=5000)
    samples = stats.bootstrap_aggregates(scores, reps=50_000, seed=0)
    mine = stats.aggregate_intervals(scores, reps=50_000, seed=0)
    for i, name in enumerate(stats.AGGREGATES):
        assert mine[name].point == pytest.approx(points["a"][i], rel=1e-12, abs=1e-12), name
        tol = _mc_tolerance(samples[name])
        assert abs(mine[name].low - intervals["a"][0, i]) < tol, name
        assert abs(mine[name].high - intervals["a"][1, i]) < tol, name


def test_probability_of_improvement_agrees_with_rliable():
    library, metrics = _rliable()
    rng = np.random.default_rng(12)
    x = np.round(rng.normal(55.0, 10.0, size=(5, 3)))  # rounded: ties occur
    y = np.round(rng.normal(50.0, 10.0, size=(4, 3)))
    y[:, 1] = x[:4, 1]
    assert stats.probability_of_improvement(x, y) == pytest.approx(
        metrics.probability_of_improvement(x, y), rel=1e-12)
    np.random.seed(0)
    _, intervals = library.get_interval_estimates(
        {"xy": (x, y)}, metrics.probability_of_improvement, reps=2000)
    mine = stats.probability_of_improvement_interval(x, y, reps=50_000)
    tol = _mc_tolerance(stats.bootstrap_probability_of_improvement(x, y, reps=50_000))
    assert abs(mine.low - intervals["xy"][0].item()) < tol
    assert abs(mine.high - intervals["xy"][1].item()) < tol
