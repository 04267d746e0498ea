"""Statistics for comparing agents: aggregates with stratified bootstrap CIs, probability of
improvement, per-run summaries of a data-efficiency curve, and rank statistics of
configurations (Spearman, Kendall's tau-b, the regret of a pick) for `seqeval select`.

The aggregates follow Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical
Precipice" (NeurIPS 2021) and give the same numbers as its library rliable 1.2.0 on the same
inputs (tests/test_stats.py checks this): point estimates exactly, confidence intervals within
Monte-Carlo error. The bootstrap here is vectorised numpy driven by a seeded Generator, so a
50,000-resample interval takes well under a second instead of rliable's Python loop.

Score matrices are (runs x tasks): column m holds the runs (seeds) of one task (dataset).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

AGGREGATES: tuple[str, ...] = ("iqm", "median", "mean", "optimality_gap")
AGGREGATE_TITLES: dict[str, str] = {
    "iqm": "IQM",
    "median": "Median",
    "mean": "Mean",
    "optimality_gap": "Optimality gap",
}
# The per-seed measures of a curve that the report aggregates across datasets.
MEASURES: dict[str, str] = {"final": "final score", "auc": "area under the curve"}
DEFAULT_REPS = 50_000  # the paper's scripts (rliable's default)
OPTIMALITY_THRESHOLD = 100.0  # expert on D4RL's 0-100 normalized scale
# Bound on the elements of one resampled block, so 50,000 resamples of a large matrix do not
# need gigabytes at once.
_BLOCK_ELEMENTS = 4_000_000


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval [low, high] (NaN when undefined)."""

    point: float
    low: float
    high: float


# ---------------------------------------------------------------------------------------------
# Aggregates of a (runs x tasks) matrix. Each takes a batch (..., runs, tasks) so the bootstrap
# can evaluate all resamples at once; on a plain 2-D matrix it returns a 0-d array.


def _iqm(scores: np.ndarray) -> np.ndarray:
    # The 25% trimmed mean of all runs of all tasks pooled, exactly as scipy.stats.trim_mean:
    # cut int(0.25 n) scores from each end, average the rest.
    flat = scores.reshape(*scores.shape[:-2], -1)
    n = flat.shape[-1]
    cut = int(0.25 * n)
    return np.sort(flat, axis=-1)[..., cut : n - cut].mean(axis=-1)


def _median(scores: np.ndarray) -> np.ndarray:
    # Median over tasks of each task's mean over runs.
    return np.median(scores.mean(axis=-2), axis=-1)


def _mean(scores: np.ndarray) -> np.ndarray:
    return scores.mean(axis=-2).mean(axis=-1)


def _optimality_gap(scores: np.ndarray, threshold: float = OPTIMALITY_THRESHOLD) -> np.ndarray:
    # How far below the threshold the runs fall on average; scores above it count as equal to it.
    flat = scores.reshape(*scores.shape[:-2], -1)
    return threshold - np.minimum(flat, threshold).mean(axis=-1)


def _aggregate_fn(name: str, threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    if name == "iqm":
        return _iqm
    if name == "median":
        return _median
    if name == "mean":
        return _mean
    if name == "optimality_gap":
        return lambda s: _optimality_gap(s, threshold)
    raise ValueError(f"unknown aggregate {name!r}; choose from {', '.join(AGGREGATES)}")


def _as_matrix(scores: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise ValueError(f"expected a non-empty (runs x tasks) matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("score matrix contains NaN or infinite values")
    return matrix


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of all runs of all tasks pooled."""
    return float(_iqm(_as_matrix(scores)))


def median(scores: np.ndarray) -> float:
    """Median over tasks of the per-task mean over runs."""
    return float(_median(_as_matrix(scores)))


def mean(scores: np.ndarray) -> float:
    """Mean over tasks of the per-task mean over runs."""
    return float(_mean(_as_matrix(scores)))


def optimality_gap(scores: np.ndarray, threshold: float = OPTIMALITY_THRESHOLD) -> float:
    """threshold minus the mean of all scores clipped above at threshold (lower is better)."""
    return float(_optimality_gap(_as_matrix(scores), threshold))


def aggregate(scores: np.ndarray, name: str, threshold: float = OPTIMALITY_THRESHOLD) -> float:
    """One aggregate by name (see AGGREGATES)."""
    return float(_aggregate_fn(name, threshold)(_as_matrix(scores)))


# ---------------------------------------------------------------------------------------------
# Stratified bootstrap: each resample redraws, for every task independently, as many runs as
# that task has, with replacement. Tasks are fixed (rliable's default, task_bootstrap=False): the
# interval describes the uncertainty from the finite number of seeds on this set of datasets.


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """(low, high) of a bootstrap distribution: the percentile method on numpy's default
    (linear) quantiles, as arch/rliable do."""
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def block_sizes(reps: int, elements_per_rep: int) -> list[int]:
    """Resamples per block, so that a block holds at most _BLOCK_ELEMENTS elements."""
    block = max(1, _BLOCK_ELEMENTS // max(1, elements_per_rep))
    return [min(block, reps - start) for start in range(0, reps, block)]


def bootstrap_aggregates(
    scores: np.ndarray,
    names: Sequence[str] = AGGREGATES,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    threshold: float = OPTIMALITY_THRESHOLD,
) -> dict[str, np.ndarray]:
    """The bootstrap distribution (reps,) of each named aggregate, all from the same resamples."""
    matrix = _as_matrix(scores)
    if reps < 1:
        raise ValueError("reps must be at least 1")
    runs, tasks = matrix.shape
    fns = {name: _aggregate_fn(name, threshold) for name in names}
    rng = np.random.default_rng(seed)
    columns = np.arange(tasks)
    out: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for size in block_sizes(reps, runs * tasks):
        rows = rng.integers(0, runs, size=(size, runs, tasks))
        resampled = matrix[rows, columns]  # (size, runs, tasks)
        for name, fn in fns.items():
            out[name].append(fn(resampled))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def aggregate_intervals(
    scores: np.ndarray,
    names: Sequence[str] = AGGREGATES,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    confidence: float = 0.95,
    threshold: float = OPTIMALITY_THRESHOLD,
) -> dict[str, Interval]:
    """Point estimate and stratified-bootstrap percentile CI of each aggregate."""
    matrix = _as_matrix(scores)
    samples = bootstrap_aggregates(matrix, names, reps, seed, threshold)
    result = {}
    for name in names:
        low, high = percentile_interval(samples[name], confidence)
        result[name] = Interval(aggregate(matrix, name, threshold), low, high)
    return result


# ---------------------------------------------------------------------------------------------
# Probability of improvement: P(X > Y) for a run X of one agent and a run Y of the other on the
# same task, ties counting 1/2 (the Mann-Whitney U statistic over nx * ny), averaged over tasks.


def _pairwise_wins(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # (tasks, nx, ny): 1 where x beats y, 1/2 on a tie, 0 otherwise.
    xt, yt = x.T[:, :, None], y.T[:, None, :]
    return (xt > yt).astype(np.float64) + 0.5 * (xt == yt)


def _check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_matrix(x), _as_matrix(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"X has {x.shape[1]} tasks and Y has {y.shape[1]}; they must match")
    return x, y


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) averaged over tasks; x is (runs_x x tasks), y is (runs_y x tasks)."""
    x, y = _check_pair(x, y)
    return float(_pairwise_wins(x, y).mean(axis=(1, 2)).mean())


def _draw_counts(rng: np.random.Generator, size: int, runs: int, tasks: int) -> np.ndarray:
    # How many times each of `runs` runs is drawn when `runs` draws are made with replacement,
    # independently per resample and task: (size, tasks, runs).
    rows = rng.integers(0, runs, size=(size, runs, tasks))
    cell = (np.arange(size)[:, None, None] * tasks + np.arange(tasks)[None, None, :]) * runs
    flat = np.bincount((cell + rows).ravel(), minlength=size * tasks * runs)
    return flat.reshape(size, tasks, runs).astype(np.float64)


def bootstrap_probability_of_improvement(
    x: np.ndarray, y: np.ndarray, reps: int = DEFAULT_REPS, seed: int = 0
) -> np.ndarray:
    """The stratified-bootstrap distribution (reps,) of P(X > Y): runs of X and of Y are
    redrawn independently within each task (rliable's StratifiedIndependentBootstrap)."""
    x, y = _check_pair(x, y)
    if reps < 1:
        raise ValueError("reps must be at least 1")
    (nx, tasks), ny = x.shape, y.shape[0]
    wins = _pairwise_wins(x, y)
    rng = np.random.default_rng(seed)
    parts = []
    # A resample enters only through how often it draws each original run, so U is the bilinear
    # form counts_x^T W counts_y; that avoids materialising (reps, nx, ny) comparisons.
    for size in block_sizes(reps, (nx + ny) * tasks * 2):
        counts_x = _draw_counts(rng, size, nx, tasks)  # (size, tasks, nx)
        counts_y = _draw_counts(rng, size, ny, tasks)  # (size, tasks, ny)
        per_task = np.einsum("rti,tij,rtj->rt", counts_x, wins, counts_y) / (nx * ny)
        parts.append(per_task.mean(axis=1))
    return np.concatenate(parts)


def probability_of_improvement_interval(
    x: np.ndarray,
    y: np.ndarray,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """P(X > Y) with its stratified-bootstrap percentile CI."""
    samples = bootstrap_probability_of_improvement(x, y, reps, seed)
    low, high = percentile_interval(samples, confidence)
    return Interval(probability_of_improvement(x, y), low, high)


# ---------------------------------------------------------------------------------------------
# Per-run summaries of one data-efficiency curve, and their spread over seeds.


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean over seeds with a Student-t CI (mean +- t_{n-1} s / sqrt(n)).

    NaN values (a seed where the summary is undefined) are dropped; with one value left the
    interval is undefined (NaN bounds), with none the mean is NaN too.
    """
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    # Student's t quantile (the same value as scipy.stats.t.ppf); scipy.special imports in
    # ~0.2 s where scipy.stats takes ~0.65 s, paid by every report and the demo's figure.
    from scipy.special import stdtrit

    center = float(arr.mean())
    if arr.size == 1:
        return Interval(center, math.nan, math.nan)
    half = float(stdtrit(arr.size - 1, 0.5 + confidence / 2.0)
                 * arr.std(ddof=1) / math.sqrt(arr.size))
    return Interval(center, center - half, center + half)


def _curve(samples: Sequence[float], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(samples, dtype=np.float64)
    v = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.shape != v.shape or s.size == 0:
        raise ValueError("samples and scores must be non-empty 1-D arrays of the same length")
    order = np.argsort(s, kind="stable")
    return s[order], v[order]


def normalized_auc(
    samples: Sequence[float], scores: Sequence[float], end: float, start: float = 0.0
) -> float:
    """Area under the curve on the sample axis from start to end, divided by (end - start).

    The result is the curve's average height over the samples axis, in the score's own units: on
    the normalized scale 100 means expert from the first sample on, 0 means random throughout.
    Between evaluations the curve is linear (trapezoids); before the first evaluation it is held
    at the first evaluated score (the first measurement is the only estimate of how the agent
    does on the first samples); after the last evaluation it is held at the last. Evaluations
    outside [start, end] are ignored, except that if none fall inside, the curve is held at the
    nearest one.
    """
    if not end > start:
        raise ValueError(f"end ({end}) must be greater than start ({start})")
    s, v = _curve(samples, scores)
    inside = (s >= start) & (s <= end)
    if not inside.any():
        nearest = v[-1] if s[-1] < start else v[0]
        return float(nearest)
    s, v = s[inside], v[inside]
    s = np.concatenate([[start], s, [end]])
    v = np.concatenate([[v[0]], v, [v[-1]]])
    area = float(np.sum((s[1:] - s[:-1]) * (v[1:] + v[:-1]) / 2.0))
    return area / (end - start)


def samples_to_fraction(
    samples: Sequence[float],
    scores: Sequence[float],
    fraction: float = 0.9,
    baseline: float = 0.0,
) -> float:
    """Samples at the first evaluation whose score reaches baseline + fraction * (final -
    baseline), where final is the curve's last score.

    On the normalized scale baseline is 0 (random), so this is the first point at 90% of the
    run's own final score. NaN when the final score is not above the baseline: there is no
    improvement to reach a fraction of.
    """
    s, v = _curve(samples, scores)
    if not v[-1] > baseline:
        return math.nan
    target = baseline + fraction * (v[-1] - baseline)
    reached = np.flatnonzero(v >= target)
    return float(s[reached[0]]) if reached.size else math.nan


# ---------------------------------------------------------------------------------------------
# Rank statistics of configurations. Each takes arrays (..., configurations) and works on the
# last axis, so a bootstrap evaluates all its resamples at once.


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, 1 = smallest, ties sharing their average rank (as
    scipy.stats.rankdata); infinities rank at the ends."""
    from scipy.stats import rankdata

    return rankdata(np.asarray(values, dtype=np.float64), axis=-1)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation along the last axis (the Pearson correlation of the ranks,
    as scipy.stats.spearmanr); NaN where either side is constant."""
    rx, ry = ranks(x), ranks(y)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    scale = np.sqrt(np.sum(rx * rx, axis=-1) * np.sum(ry * ry, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, np.sum(rx * ry, axis=-1) / scale, np.nan)


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b along the last axis (as scipy.stats.kendalltau): concordant minus
    discordant pairs over sqrt((pairs - pairs tied in x) (pairs - pairs tied in y)); NaN where
    either side is constant."""
    # Ranks keep every order and tie and turn infinities into finite numbers.
    rx, ry = ranks(x), ranks(y)
    n = rx.shape[-1]
    sx = np.sign(rx[..., :, None] - rx[..., None, :])
    sy = np.sign(ry[..., :, None] - ry[..., None, :])
    pairs = n * (n - 1) / 2
    tied_x = (np.sum(sx == 0, axis=(-2, -1)) - n) / 2
    tied_y = (np.sum(sy == 0, axis=(-2, -1)) - n) / 2
    scale = np.sqrt((pairs - tied_x) * (pairs - tied_y))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, np.sum(sx * sy, axis=(-2, -1)) / 2 / scale, np.nan)


def pick_regret(oriented: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Truth of the best configuration minus the truth of the criterion's top pick, along the
    last axis; `oriented` is larger for what the criterion prefers. A tie at the top is a
    uniformly random choice among the tied: its expected regret."""
    top = oriented == np.max(oriented, axis=-1, keepdims=True)
    picked = np.sum(np.where(top, truth, 0.0), axis=-1) / np.sum(top, axis=-1)
    return np.max(truth, axis=-1) - picked


def random_regret(truth: np.ndarray) -> np.ndarray:
    """Expected regret of a uniformly random pick: the best truth minus the mean truth."""
    return np.max(truth, axis=-1) - np.mean(truth, axis=-1)
