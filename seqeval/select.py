"""`seqeval select STUDY_DIR [--criterion NAME] [--out DIR]`: environment-free model selection.

Offline RL is used where trying a policy in the environment is costly, yet hyperparameters and
checkpoints are usually chosen by trying them there. This command measures whether what a run
records without the environment (the prequential losses of docs/protocol.md §3, the critic's
Q of the dataset's actions, the training losses) picks what the environment would pick.

For every agent x dataset x mode of a study, each criterion ranks the agent's configurations
(means over seeds) and is compared with the truth, the final normalized score and the AUC of
`seqeval report`: Spearman and Kendall rank correlation with bootstrap CIs (over seeds: seed s
of every configuration shares its random keys, so the seeds are resampled together), the
regret of the criterion's top pick, and the expected regret of a uniformly random pick.
Within each run, the same signals pick an evaluation point (checkpoint selection; each
evaluation is scored on the chunk of data that follows it). Outputs in the out
dir (default STUDY_DIR/selection):

    selection.md          tables, notes and the figure
    selection.csv         one row per dataset x agent x criterion x truth
    checkpoints.csv       one row per dataset x agent x checkpoint criterion
    configurations.csv    one row per configuration: its truths and criteria (means over seeds)
    selection.{png,pdf}   criterion against final score, a panel per agent x dataset

docs/selection.md defines every criterion and number.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seqeval import stats
from seqeval.errors import UserError
from seqeval.report import bootstrap_seed, summarise_seed
from seqeval.results import TRAINING_KEYS
from seqeval.runs import Group, Run, SeedCurve, load_groups

if TYPE_CHECKING:  # base imports JAX; the CLI imports this module for every command
    from seqeval.algorithms.base import Metric

OUTPUT_FILES = ("selection.md", "selection.csv", "checkpoints.csv", "configurations.csv",
                "selection.png", "selection.pdf")
DEFAULT_REPS = 10_000  # bootstrap resamples: percentile bounds stable to about 0.01
# The truths a configuration is ranked against (report.summarise_seed's measures).
TRUTHS: dict[str, str] = {"final": "final score", "auc": "AUC"}
# Drawn by default in the figure, per agent: the first available of each tuple.
HEADLINE = (("action_nll_dl", "action_mse_dl"), ("td_error_dl",), ("q_value_mean",))


# ---------------------------------------------------------------------------------------------
# Criteria


@dataclasses.dataclass(frozen=True)
class Criterion:
    """A number computed per seed from what a run records, without the environment."""

    name: str
    source: str  # "prequential" (prequential.csv) or "training" (training.csv)
    metric: str  # the recorded column it reads
    summary: str  # dl | mean | last (configurations); next | train (checkpoints, and train)
    higher_is_better: bool

    @property
    def sign(self) -> float:
        """Orientation: sign x value is larger for what the criterion predicts is better."""
        return 1.0 if self.higher_is_better else -1.0

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    @property
    def worst(self) -> float:
        """The value a non-finite measurement takes: it ranks its configuration last."""
        return -math.inf if self.higher_is_better else math.inf

    @property
    def description(self) -> str:
        what = self.metric.replace("_", " ")
        return {
            "dl": f"prequential description length of {what} (sum over every scored "
                  "transition)",
            "mean": f"mean {what} over every scored transition",
            "last": f"{what} on the last chunk",
            "next": f"{what} on the chunk after the evaluation",
            "train": f"training {what} over the chunk before the evaluation",
        }[self.summary]


def _directed(metrics: Sequence[str], declared: Mapping[str, Metric]) -> list[str]:
    """The metrics the agent declares a direction for (`Agent.metrics`), sorted; a metric
    without one (a temperature's tuning loss, an entropy) or undeclared is no criterion."""
    return sorted(m for m in metrics if m in declared and declared[m].direction is not None)


def _higher(metric: str, declared: Mapping[str, Metric]) -> bool:
    return declared[metric].direction == "higher"


def configuration_criteria(prequential: Sequence[str], training: Sequence[str],
                           declared: Mapping[str, Metric]) -> list[Criterion]:
    """Criteria that rank configurations, from the metrics runs record and the directions
    their agent declares: per prequential loss its description length and last-chunk value,
    per prediction (higher is better) its mean and last-chunk value, per training metric its
    value over the last chunk."""
    out = []
    for metric in _directed(prequential, declared):
        higher = _higher(metric, declared)
        out.append(Criterion(f"{metric}_{'mean' if higher else 'dl'}", "prequential", metric,
                             "mean" if higher else "dl", higher))
        out.append(Criterion(f"{metric}_last", "prequential", metric, "last", higher))
    out += [Criterion(f"train_{m}", "training", m, "train", _higher(m, declared))
            for m in _directed(training, declared)]
    return out


def checkpoint_criteria(prequential: Sequence[str], training: Sequence[str],
                        declared: Mapping[str, Metric]) -> list[Criterion]:
    """Criteria that rank a run's evaluation points: each prequential metric on the next chunk
    (the data the evaluated model has not seen), each training metric over the chunk just
    trained on; only metrics with a declared direction."""
    out = [Criterion(f"{m}_next", "prequential", m, "next", _higher(m, declared))
           for m in _directed(prequential, declared)]
    out += [Criterion(f"train_{m}", "training", m, "train", _higher(m, declared))
            for m in _directed(training, declared)]
    return out


def declared_metrics(group: Group) -> dict[str, Metric] | None:
    """The metric declarations of the group's agent (None when it cannot be loaded)."""
    from seqeval.algorithms.registry import get_agent

    try:
        return dict(get_agent(group.runs[0].config.agent).metrics)
    except UserError:
        return None


# ---------------------------------------------------------------------------------------------
# What one seed recorded


@dataclasses.dataclass
class SeedRecord:
    """One seed of a configuration: its truths and the signals its run recorded."""

    curve: SeedCurve
    final: float
    auc: float
    prequential: list[Any]  # the seed's PrequentialRow list, by samples
    training: list[dict[str, Any]]  # the seed's offline training rows, by samples

    def prequential_metrics(self) -> set[str]:
        return {name for row in self.prequential for name in row.losses}

    def training_metrics(self) -> set[str]:
        return {k for row in self.training for k in row if k not in TRAINING_KEYS}

    def value(self, criterion: Criterion) -> float:
        """The criterion's value for the whole run (NaN: not recorded; criterion.worst: not
        finite)."""
        if criterion.source == "training":
            if not self.training or criterion.metric not in self.training[-1]:
                return math.nan
            return _finite_or(self.training[-1][criterion.metric], criterion.worst)
        if not self.prequential or criterion.metric not in self.prequential[-1].losses:
            return math.nan
        last = self.prequential[-1]
        if criterion.summary == "last":
            return _finite_or(last.losses[criterion.metric], criterion.worst)
        total = _finite_or(last.cumulative[criterion.metric], criterion.worst)
        if criterion.summary == "mean":
            return total / sum(row.transitions for row in self.prequential)
        return total  # dl

    def checkpoint_values(self, criterion: Criterion) -> dict[int, float]:
        """Evaluation samples -> the criterion at that evaluation point, where recorded: the
        next chunk's prequential value (the chunk that starts where the evaluation is) or the
        training value of the chunk that ended there."""
        if criterion.source == "training":
            return {int(row["samples"]): _finite_or(row.get(criterion.metric), criterion.worst)
                    for row in self.training if criterion.metric in row}
        return {row.samples: _finite_or(row.losses.get(criterion.metric), criterion.worst)
                for row in self.prequential if criterion.metric in row.losses}


def _finite_or(value: float | None, worst: float) -> float:
    return float(value) if value is not None and math.isfinite(value) else worst


def seed_records(group: Group) -> list[SeedRecord]:
    """Every seed of a group with its truths (report.summarise_seed) and its own run's rows."""
    by_path: dict[Path, Run] = {run.path: run for run in group.runs}
    records = []
    for curve in group.seeds:
        run = by_path[curve.run_dir]
        summary = summarise_seed(curve, group.dataset_size, group.normalized)
        records.append(SeedRecord(
            curve=curve, final=summary.final, auc=summary.auc,
            prequential=sorted((r for r in run.prequential if r.seed == curve.seed),
                               key=lambda r: r.samples),
            training=sorted((r for r in run.training if r["seed"] == curve.seed
                             and r.get("phase") in ("offline", None)),
                            key=lambda r: r["samples"])))
    # By seed number, so that seed i of every configuration sits at index i (paired draws).
    return sorted(records, key=lambda r: (r.curve.seed, str(r.curve.run_dir)))


# ---------------------------------------------------------------------------------------------
# A cell: the configurations of one agent on one dataset in one mode


@dataclasses.dataclass
class Configuration:
    group: Group
    seeds: list[SeedRecord]

    @property
    def label(self) -> str:
        return self.group.method.variant or self.group.method.name

    def truth(self, name: str) -> np.ndarray:
        return np.array([getattr(s, name) for s in self.seeds])

    def values(self, criterion: Criterion) -> np.ndarray:
        return np.array([s.value(criterion) for s in self.seeds])


@dataclasses.dataclass
class Cell:
    dataset: str
    agent: str
    mode: str
    configurations: list[Configuration]
    criteria: list[Criterion]  # recorded by every seed of every configuration
    checkpoint_criteria: list[Criterion]

    @property
    def title(self) -> str:
        suffix = "" if self.mode == "sequential" else f" ({self.mode})"
        return f"{self.agent}{suffix} on {self.dataset}"

    @property
    def normalized(self) -> bool:
        return all(c.group.normalized for c in self.configurations)


def build_cells(groups: Sequence[Group]) -> tuple[list[Cell], list[str]]:
    """Groups (methods on datasets) gathered into cells of one agent, dataset and mode, with
    the criteria every seed of the cell recorded; notes on what was left out."""
    notes = []
    members: dict[tuple[str, str, str], list[Group]] = defaultdict(list)
    for group in groups:
        members[(group.dataset, group.method.agent_name, group.mode)].append(group)
    cells = []
    for (dataset, agent, mode), cell_groups in sorted(members.items()):
        configurations = [Configuration(g, seed_records(g)) for g in cell_groups]
        where = f"{agent} ({mode}) on {dataset}"
        if len(configurations) < 2:
            notes.append(f"{where}: one configuration only; nothing to select")
            continue
        seeds = [s for c in configurations for s in c.seeds]
        prequential = set.union(*(s.prequential_metrics() for s in seeds))
        training = set.union(*(s.training_metrics() for s in seeds))
        kept_prequential = set.intersection(*(s.prequential_metrics() for s in seeds))
        kept_training = set.intersection(*(s.training_metrics() for s in seeds))
        for name in sorted((prequential - kept_prequential) | (training - kept_training)):
            lacking = [c.label for c in configurations
                       if any(name not in s.prequential_metrics() | s.training_metrics()
                              for s in c.seeds)]
            notes.append(f"{where}: {name} is left out, not recorded by every seed of "
                         + ", ".join(lacking))
        transitions = {sum(r.transitions for r in s.prequential) for s in seeds
                       if s.prequential}
        if len(transitions) > 1:
            notes.append(f"{where}: the runs scored different numbers of transitions "
                         f"({', '.join(map(str, sorted(transitions)))}); their description "
                         "lengths are not comparable (compare the *_last criteria instead)")
        declared = declared_metrics(cell_groups[0])
        if declared is None:
            notes.append(f"{where}: agent '{cell_groups[0].runs[0].config.agent}' cannot be "
                         "loaded, so its metrics' directions are unknown; no criteria")
            declared = {}
        undirected = sorted((kept_prequential | kept_training)
                            - set(_directed(kept_prequential | kept_training, declared)))
        if undirected and declared:
            notes.append(f"{where}: {', '.join(undirected)} "
                         f"{'has' if len(undirected) == 1 else 'have'} no direction "
                         "(the agent's Agent.metrics), so no criterion")
        cell = Cell(dataset, agent, mode, configurations,
                    configuration_criteria(kept_prequential, kept_training, declared),
                    checkpoint_criteria(kept_prequential, kept_training, declared))
        if not cell.normalized:
            notes.append(f"{where}: no normalized scores; truths and regrets are raw returns")
        cells.append(cell)
    return cells, notes


# ---------------------------------------------------------------------------------------------
# Statistics of a ranking. Each takes arrays (..., configurations) and works on the last axis,
# so a bootstrap evaluates all its resamples at once.


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


def seed_draws(seed_ids: Sequence[Sequence[int]], reps: int, rng: np.random.Generator
               ) -> list[np.ndarray]:
    """A bootstrap over seeds: per configuration, (reps, seeds) indices of its seeds drawn with
    replacement. The same draws index every per-seed array of a configuration (criterion and
    truth alike), so a seed's values stay paired. Where every configuration ran the same seeds,
    one draw serves them all: seed s of each configuration shares its random keys (network
    initialisation, minibatches), so a seed is the unit of resampling, and a criterion that
    does not depend on a setting (IQL's critic on its actor's settings) stays tied in every
    resample as it is in the data. Otherwise each configuration's seeds are drawn on their own."""
    if len({tuple(ids) for ids in seed_ids}) == 1:
        shared = rng.integers(0, len(seed_ids[0]), size=(reps, len(seed_ids[0])))
        return [shared] * len(seed_ids)
    return [rng.integers(0, len(ids), size=(reps, len(ids))) for ids in seed_ids]


# ---------------------------------------------------------------------------------------------
# Selecting configurations


@dataclasses.dataclass
class Selection:
    """How well one criterion picks one cell's configurations against one truth."""

    cell: Cell
    criterion: Criterion
    truth: str  # a key of TRUTHS
    spearman: stats.Interval
    kendall: stats.Interval
    regret: stats.Interval
    random_regret: stats.Interval
    picked: int  # the configuration the criterion ranks first (first of a tie)
    tied: int  # configurations tied with it at the top
    best: int  # the configuration with the best truth
    criterion_means: np.ndarray  # per configuration, mean over seeds
    truth_means: np.ndarray

    @property
    def pick_rank(self) -> int:
        """Where the pick stands by the truth: 1 = the best configuration."""
        return 1 + int(np.sum(self.truth_means > self.truth_means[self.picked]))


def _interval(point: float, samples: np.ndarray, confidence: float = 0.95) -> stats.Interval:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0 or not math.isfinite(point):
        return stats.Interval(point, math.nan, math.nan)
    return stats.Interval(point, *stats.percentile_interval(samples, confidence))


def select_configurations(cell: Cell, reps: int = DEFAULT_REPS, seed: int = 0,
                          criteria: Sequence[Criterion] | None = None) -> list[Selection]:
    """Every criterion of the cell against every truth, with bootstrap CIs over seeds. All
    criteria and truths share one set of resamples."""
    criteria = cell.criteria if criteria is None else criteria
    configurations = cell.configurations
    rng = np.random.default_rng(seed)
    draws = seed_draws([[s.curve.seed for s in c.seeds] for c in configurations], reps, rng)

    def means(per_seed: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        point = np.array([v.mean() for v in per_seed])
        resampled = np.stack([v[d].mean(axis=1) for v, d in zip(per_seed, draws,
                                                                strict=True)], axis=-1)
        return point, resampled  # (configurations,), (reps, configurations)

    truths = {t: means([c.truth(t) for c in configurations]) for t in TRUTHS}
    out = []
    for criterion in criteria:
        values, resampled = means([c.values(criterion) for c in configurations])
        oriented, oriented_reps = criterion.sign * values, criterion.sign * resampled
        top = oriented == oriented.max()
        picked = int(np.flatnonzero(top)[0])
        for truth, (truth_values, truth_reps) in truths.items():
            with np.errstate(invalid="ignore"):  # inf - inf: a tie of non-finite values
                rho, rho_reps = spearman(oriented, truth_values), spearman(oriented_reps,
                                                                           truth_reps)
            tau = kendall_tau_b(oriented, truth_values)
            tau_reps = np.concatenate([
                kendall_tau_b(oriented_reps[i:i + size], truth_reps[i:i + size])
                for i, size in _blocks(reps, len(configurations))])
            out.append(Selection(
                cell=cell, criterion=criterion, truth=truth,
                spearman=_interval(float(rho), rho_reps),
                kendall=_interval(float(tau), tau_reps),
                regret=_interval(float(pick_regret(oriented, truth_values)),
                                 pick_regret(oriented_reps, truth_reps)),
                random_regret=_interval(float(random_regret(truth_values)),
                                        random_regret(truth_reps)),
                picked=picked, tied=int(top.sum()), best=int(np.argmax(truth_values)),
                criterion_means=values, truth_means=truth_values))
    return out


def _blocks(reps: int, configurations: int) -> list[tuple[int, int]]:
    # Kendall's pairwise signs take (reps, n, n) arrays: bounded blocks of resamples.
    starts, out = 0, []
    for size in stats.block_sizes(reps, 4 * configurations * configurations):
        out.append((starts, size))
        starts += size
    return out


# ---------------------------------------------------------------------------------------------
# Selecting checkpoints within a run


@dataclasses.dataclass
class CheckpointSelection:
    """How well one criterion picks evaluation points within the runs of one cell: over every
    (configuration, seed) run, the regret of the picked point against the best of the points
    the criterion could pick from (its candidates), and baselines over the same candidates.
    Intervals treat configurations as the independent units: the seeds of a configuration
    share its settings (and seed s shares its keys across configurations), so their runs are
    averaged within the configuration first (a cluster mean), and the 95% t interval is over
    configurations."""

    cell: Cell
    criterion: Criterion
    runs: int  # runs with at least two candidate points
    configurations: int  # configurations with such runs (the interval's units)
    candidates: float  # candidate points per run (mean)
    regret: stats.Interval  # mean over configurations of their runs' mean, 95% t interval
    final_regret: stats.Interval  # the last (full-data) model against the best candidate
    random_regret: stats.Interval  # a uniformly random candidate
    hit_rate: float  # fraction of runs where the pick is the best candidate
    spearman: stats.Interval  # within-run rank correlation with the score (runs with >= 3)


def run_checkpoint_regrets(record: SeedRecord, criterion: Criterion
                           ) -> tuple[float, float, float, bool, float, int] | None:
    """(regret of the pick, regret of the final model, regret of a random candidate, whether
    the pick is the best candidate, within-run Spearman, candidates) for one seed's run; None
    with fewer than two candidate points. Regrets are against the best candidate: the points
    the criterion has a value at (a next-chunk criterion has none at the last evaluation, so
    the final model may beat every candidate: a negative final regret)."""
    samples, scores = record.curve.offline_samples, record.curve.offline_values
    at = record.checkpoint_values(criterion)
    candidates = [i for i, s in enumerate(samples) if int(s) in at]
    if len(candidates) < 2:
        return None
    oriented = criterion.sign * np.array([at[int(samples[i])] for i in candidates])
    truth = scores[candidates]
    best = float(truth.max())
    top = oriented == oriented.max()
    regret = best - float(truth[top].mean())
    with np.errstate(invalid="ignore"):
        rho = float(spearman(oriented, truth)) if len(candidates) >= 3 else math.nan
    return (regret, best - float(scores[-1]), best - float(truth.mean()),
            bool(top.sum() == 1 and truth[top][0] == best), rho, len(candidates))


def clustered_interval(values: Sequence[float], clusters: Sequence[int]) -> stats.Interval:
    """Mean and 95% t interval with the clusters as units: each cluster's finite values are
    averaged first (NaN values are left out)."""
    by_cluster: dict[int, list[float]] = defaultdict(list)
    for value, cluster in zip(values, clusters, strict=True):
        if math.isfinite(value):
            by_cluster[cluster].append(value)
    return stats.t_interval([float(np.mean(v)) for v in by_cluster.values()])


def select_checkpoints(cell: Cell, criteria: Sequence[Criterion] | None = None
                       ) -> list[CheckpointSelection]:
    criteria = cell.checkpoint_criteria if criteria is None else criteria
    out = []
    for criterion in criteria:
        results, clusters = [], []
        for index, configuration in enumerate(cell.configurations):
            for record in configuration.seeds:
                if (result := run_checkpoint_regrets(record, criterion)) is not None:
                    results.append(result)
                    clusters.append(index)
        if not results:
            continue
        regret, final, rand, hit, rho, count = (np.array(v, dtype=np.float64)
                                                 for v in zip(*results, strict=True))
        out.append(CheckpointSelection(
            cell=cell, criterion=criterion, runs=len(results),
            configurations=len(set(clusters)), candidates=float(count.mean()),
            regret=clustered_interval(regret, clusters),
            final_regret=clustered_interval(final, clusters),
            random_regret=clustered_interval(rand, clusters), hit_rate=float(hit.mean()),
            spearman=clustered_interval(rho, clusters)))
    return out


# ---------------------------------------------------------------------------------------------
# The whole selection


@dataclasses.dataclass
class SelectionResult:
    cells: list[Cell]
    configurations: list[Selection]
    checkpoints: list[CheckpointSelection]
    notes: list[str]
    reps: int
    incomplete: list[str] = dataclasses.field(default_factory=list)  # runs left out (notes too)


def _chosen(available: Sequence[Criterion], names: Sequence[str] | None) -> list[Criterion]:
    return [c for c in available if names is None or c.name in names]


def incomplete_study_runs(paths: Sequence[str | Path], all_runs: bool = False) -> list[str]:
    """A note per study among `paths` whose plan holds runs that are not complete (pending,
    running, failed): they are left out of the selection."""
    from seqeval.study import StudyDir, expand_run_dirs

    notes = []
    for path in paths:
        if not StudyDir.is_study(path):
            continue
        study = StudyDir(path)
        complete = set(expand_run_dirs([path], all_runs=all_runs))
        left = Counter(r.get("status", "pending") for r in study.records(all_runs)
                       if study.run_dir(r) not in complete)
        if left:
            total = len(complete) + sum(left.values())
            statuses = ", ".join(f"{n} {status}" for status, n in sorted(left.items()))
            notes.append(f"study '{path}': {sum(left.values())} of {total} runs are not "
                         f"complete ({statuses}) and are left out")
    return notes


def run_selection(run_dirs: Sequence[str | Path], criteria: Sequence[str] | None = None,
                  reps: int = DEFAULT_REPS, seed: int = 0,
                  all_runs: bool = False) -> SelectionResult:
    """Configuration and checkpoint selection for every cell of these runs (a study directory
    stands for its complete runs); `criteria` keeps only the criteria of those names."""
    from seqeval.study import expand_run_dirs

    if reps < 1:
        raise UserError(f"--reps {reps}: the number of bootstrap resamples must be at least 1")
    incomplete = incomplete_study_runs(run_dirs, all_runs)
    groups, load_notes = load_groups(expand_run_dirs(run_dirs, all_runs=all_runs))
    notes = incomplete + load_notes
    cells, cell_notes = build_cells(groups)
    notes += cell_notes
    if not cells:
        raise UserError("no agent has two configurations on one dataset; select compares "
                        "configurations: pass a study with a grid of agent settings")
    if criteria is not None:
        known = sorted({c.name for cell in cells
                        for c in (*cell.criteria, *cell.checkpoint_criteria)})
        unknown = [name for name in criteria if name not in known]
        if unknown:
            raise UserError(f"--criterion {unknown[0]}: not recorded by these runs; choose "
                            f"from {', '.join(known)}")
    configurations = [s for cell in cells
                      for s in select_configurations(cell, reps, seed,
                                                     _chosen(cell.criteria, criteria))]
    checkpoints = [s for cell in cells
                   for s in select_checkpoints(cell, _chosen(cell.checkpoint_criteria,
                                                             criteria))]
    return SelectionResult(cells, configurations, checkpoints, notes, reps, incomplete)


# ---------------------------------------------------------------------------------------------
# Tables


def _cells(interval: stats.Interval) -> list[float]:
    return [interval.point, interval.low, interval.high]


def write_tables(out: Path, result: SelectionResult) -> list[Path]:
    from seqeval.results import write_csv

    paths = [out / "selection.csv", out / "checkpoints.csv", out / "configurations.csv"]
    rows = []
    for s in result.configurations:
        cell, configurations = s.cell, s.cell.configurations
        rows.append([cell.dataset, cell.agent, cell.mode, s.criterion.name,
                     s.criterion.direction, s.truth, len(configurations),
                     min(len(c.seeds) for c in configurations), *_cells(s.spearman),
                     *_cells(s.kendall), *_cells(s.regret), *_cells(s.random_regret),
                     s.pick_rank, configurations[s.picked].label, s.truth_means[s.picked],
                     s.tied, configurations[s.best].label, s.truth_means[s.best]])
    write_csv(paths[0], ["dataset", "agent", "mode", "criterion", "direction", "truth",
                         "configurations", "seeds", "spearman", "spearman_ci_low",
                         "spearman_ci_high", "kendall", "kendall_ci_low", "kendall_ci_high",
                         "regret", "regret_ci_low", "regret_ci_high", "random_regret",
                         "random_regret_ci_low", "random_regret_ci_high", "pick_rank",
                         "picked", "picked_truth", "tied_at_top", "best", "best_truth"], rows)
    rows = [[s.cell.dataset, s.cell.agent, s.cell.mode, s.criterion.name, s.criterion.direction,
             s.runs, s.configurations, s.candidates, *_cells(s.regret),
             *_cells(s.final_regret),
             *_cells(s.random_regret), s.hit_rate, *_cells(s.spearman)]
            for s in result.checkpoints]
    write_csv(paths[1], ["dataset", "agent", "mode", "criterion", "direction", "runs",
                         "configurations", "candidates", "regret", "regret_ci_low",
                         "regret_ci_high",
                         "final_regret", "final_regret_ci_low", "final_regret_ci_high",
                         "random_regret", "random_regret_ci_low", "random_regret_ci_high",
                         "hit_rate", "spearman", "spearman_ci_low", "spearman_ci_high"], rows)
    names = list(dict.fromkeys(c.name for cell in result.cells for c in cell.criteria))
    rows = []
    for cell in result.cells:
        for configuration in cell.configurations:
            values = {c.name: float(configuration.values(c).mean()) for c in cell.criteria}
            rows.append([cell.dataset, cell.agent, cell.mode, configuration.label,
                         len(configuration.seeds), float(configuration.truth("final").mean()),
                         float(configuration.truth("auc").mean()),
                         *(values.get(name, math.nan) for name in names)])
    write_csv(paths[2], ["dataset", "agent", "mode", "configuration", "seeds", "final", "auc",
                         *names], rows)
    return paths


def _regret_text(interval: stats.Interval) -> str:
    from seqeval.report import with_ci

    return with_ci(interval, 1)


def _summary_rows(result: SelectionResult) -> list[list[str]]:
    """Per agent and criterion, over its datasets (and modes): mean Spearman against each
    truth, mean regret of the pick and of a random pick (final score), and in how many cells
    the pick's regret was below the random pick's."""
    by_key: dict[tuple[str, str], list[Selection]] = defaultdict(list)
    for s in result.configurations:
        by_key[(s.cell.agent, s.criterion.name)].append(s)
    rows = []
    for (agent, name), selections in sorted(by_key.items()):
        final = [s for s in selections if s.truth == "final"]
        auc = [s for s in selections if s.truth == "auc"]

        def average(items: list[Selection], field: str) -> str:
            values = [getattr(s, field).point for s in items]
            values = [v for v in values if math.isfinite(v)]
            return f"{np.mean(values):+.2f}" if values else "n/a"

        regret = np.mean([s.regret.point for s in final])
        chance = np.mean([s.random_regret.point for s in final])
        beats = sum(s.regret.point < s.random_regret.point for s in final)
        above = sum(s.spearman.low > 0 for s in final)
        below = sum(s.spearman.high < 0 for s in final)
        rows.append([agent, name, final[0].criterion.direction, average(final, "spearman"),
                     f"{above} / {below}", average(auc, "spearman"), f"{regret:.1f}",
                     f"{chance:.1f}", f"{beats} of {len(final)}"])
    return rows


def render_markdown(result: SelectionResult, figures: Sequence[Path]) -> str:
    from seqeval.report import markdown_table, with_ci

    cells = result.cells
    agents = sorted({c.agent for c in cells})
    datasets = sorted({c.dataset for c in cells})
    total = sum(len(c.configurations) for c in cells)
    lines = [
        "# seqeval select",
        "",
        f"{total} configurations of {len(agents)} agent{'s' * (len(agents) != 1)} "
        f"({', '.join(agents)}) on {len(datasets)} dataset{'s' * (len(datasets) != 1)} "
        f"({', '.join(datasets)}). Each criterion is computed without the environment from "
        "what the runs recorded and compared with the environment's truth: the final "
        "normalized score and the AUC (the curve's average over samples 0..N), means over "
        "seeds. Definitions: docs/selection.md in the seqeval repository.",
        "",
        "Correlations are of the criterion oriented so that larger predicts better (a loss is "
        "negated): +1 ranks the configurations exactly as the environment does, 0 is chance. "
        f"Intervals: 95% percentile bootstrap ({result.reps:,} resamples of the seeds; seed s "
        "of every configuration shares its random keys, so one draw of seeds serves every "
        "configuration). *Regret*: the truth of the best configuration minus the truth "
        "of the criterion's top pick (0 = picked the best); *random*: the expected regret of "
        "a uniformly random pick.",
    ]
    if result.configurations:
        lines += ["", "## Which criterion to trust", "",
                  "Per agent and criterion, averaged over datasets: Spearman correlation with "
                  "each truth, and the regret of the top pick (final score) against a random "
                  "pick's; *CI > 0 / < 0*: datasets where the Spearman correlation's interval "
                  "lies above / below zero (final score); *beats random*: datasets where the "
                  "pick's regret was below a random pick's.", ""]
        lines += markdown_table(["agent", "criterion", "direction", "Spearman (final)",
                                 "CI > 0 / < 0", "Spearman (AUC)", "regret (final)",
                                 "random regret", "beats random"], _summary_rows(result))
        lines += ["", "## Configurations, per agent and dataset"]
    for cell in cells:
        selections = [s for s in result.configurations if s.cell is cell]
        if not selections:
            continue
        final = {s.criterion.name: s for s in selections if s.truth == "final"}
        auc = {s.criterion.name: s for s in selections if s.truth == "auc"}
        first = next(iter(final.values()))
        seeds = sorted({len(c.seeds) for c in cell.configurations})
        best = cell.configurations[first.best]
        unit = "" if cell.normalized else " (raw return)"
        lines += ["", f"### {cell.title}", "",
                  f"{len(cell.configurations)} configurations, "
                  f"{'/'.join(map(str, seeds))} seeds each. Best by final score{unit}: "
                  f"{best.label} ({first.truth_means[first.best]:.1f}); best by AUC: "
                  f"{cell.configurations[auc[first.criterion.name].best].label}.", ""]
        rows = []
        for name, s in final.items():
            picked = cell.configurations[s.picked].label
            if s.tied > 1:
                picked += f" (tied with {s.tied - 1})"
            rows.append([name, s.criterion.direction, with_ci(s.spearman, 2),
                         with_ci(s.kendall, 2), _regret_text(s.regret),
                         f"{picked} (#{s.pick_rank})", with_ci(auc[name].spearman, 2),
                         _regret_text(auc[name].regret)])
        rows.append(["*random pick*", "", "0", "0", _regret_text(first.random_regret), "",
                     "0", _regret_text(auc[first.criterion.name].random_regret)])
        lines += markdown_table(["criterion", "direction", "Spearman (final)",
                                 "Kendall (final)", "regret (final)", "pick (rank by final)",
                                 "Spearman (AUC)", "regret (AUC)"], rows)
    if result.checkpoints:
        lines += [
            "", "## Checkpoints within a run", "",
            "Each run (configuration x seed) picks one of its offline evaluation points by "
            "the criterion; the model evaluated at s samples is scored on the chunk of data "
            "that starts at s, which it has not trained on (*_next*), so the last, full-data "
            "model has no prequential score. *Candidates*: the points the criterion has a "
            "value at, the only ones it can pick. *Regret*: the run's best candidate score "
            "minus the picked point's; *final model*: the regret of simply keeping the last "
            "model against the same best candidate (negative where it beats every "
            "candidate); *random*: of a uniformly random candidate; each a mean over "
            "configurations of the mean over their seeds, with a 95% t interval over "
            "configurations (*configs*: the seeds of a configuration are not independent "
            "runs); *hit rate*: runs where the pick is the best candidate; *Spearman*: "
            "within-run rank correlation of the oriented criterion with the score over the "
            "candidates.", ""]
        rows = [[s.cell.dataset, s.cell.agent + ("" if s.cell.mode == "sequential"
                                                 else f" ({s.cell.mode})"),
                 s.criterion.name, s.criterion.direction, str(s.runs),
                 str(s.configurations), f"{s.candidates:.1f}",
                 with_ci(s.regret), with_ci(s.final_regret), with_ci(s.random_regret),
                 f"{s.hit_rate:.2f}", with_ci(s.spearman, 2)] for s in result.checkpoints]
        lines += markdown_table(["dataset", "agent", "criterion", "direction", "runs",
                                 "configs", "candidates", "regret", "final model", "random",
                                 "hit rate", "Spearman"], rows)
    if figures:
        lines += ["", "## Figure", ""]
        lines += [f"![{figure.stem}]({figure.name})" for figure in figures]
        lines += ["", "Each point is a configuration (mean over seeds, 95% t intervals); the "
                  "open circle is the criterion's pick, the star the best configuration in "
                  "the environment. PDF beside the PNG."]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def print_table(result: SelectionResult) -> None:
    """The configuration selection against the final score, as aligned plain text."""
    from seqeval.report import with_ci

    header = ["dataset", "agent", "criterion", "direction", "Spearman", "Kendall", "regret",
              "random"]
    rows = [[s.cell.dataset, s.cell.agent, s.criterion.name, s.criterion.direction,
             with_ci(s.spearman, 2), with_ci(s.kendall, 2), with_ci(s.regret, 1),
             f"{s.random_regret.point:.1f}"]
            for s in result.configurations if s.truth == "final"]
    if not rows:
        return
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("configuration selection against the final score "
          "(correlations of the criterion oriented so that larger predicts better)")
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths,
                                                                       strict=True)).rstrip())


# ---------------------------------------------------------------------------------------------
# Figure


def figure_criteria(cell: Cell, names: Sequence[str] | None) -> list[Criterion]:
    """What the figure draws for a cell: the chosen criteria, else the headline ones (the
    action loss's description length, the TD error's, the mean Q) that the cell records."""
    if names is not None:
        return _chosen(cell.criteria, names)
    by_name = {c.name: c for c in cell.criteria}
    return [by_name[next(n for n in options if n in by_name)] for options in HEADLINE
            if any(n in by_name for n in options)]


def _signed(value: float) -> str:
    # A correlation is undefined where the criterion or the truth is constant (a tie).
    return f"{value:+.2f}" if math.isfinite(value) else "n/a (constant)"


def selection_panels(result: SelectionResult, names: Sequence[str] | None):
    """Rows of the figure: per agent and criterion, a panel per dataset (None where that
    agent has no such cell); final score on the y-axis."""
    from seqeval.figures import SelectionPanel
    from seqeval.style import agent_color

    datasets = sorted({c.dataset for c in result.cells})
    found = {(s.cell.agent, s.cell.mode, s.criterion.name, s.cell.dataset): s
             for s in result.configurations if s.truth == "final"}
    rows: dict[tuple[str, str, str], list] = {}
    for cell in result.cells:
        for criterion in figure_criteria(cell, names):
            key = (cell.agent, cell.mode, criterion.name)
            rows.setdefault(key, [None] * len(datasets))
            s = found.get((*key, cell.dataset))
            if s is None:
                continue
            criterion_intervals = [stats.t_interval(c.values(criterion))
                                   for c in cell.configurations]
            truth_intervals = [stats.t_interval(c.truth("final"))
                               for c in cell.configurations]
            unit = "normalized score" if cell.normalized else "return"
            rows[key][datasets.index(cell.dataset)] = SelectionPanel(
                title=cell.title,
                xlabel=f"{criterion.name} ({criterion.direction})",
                ylabel=f"final {unit}",
                color=agent_color(cell.agent),
                x=np.array([i.point for i in criterion_intervals]),
                x_low=np.array([i.low for i in criterion_intervals]),
                x_high=np.array([i.high for i in criterion_intervals]),
                y=np.array([i.point for i in truth_intervals]),
                y_low=np.array([i.low for i in truth_intervals]),
                y_high=np.array([i.high for i in truth_intervals]),
                picked=s.picked, best=s.best,
                text=f"Spearman {_signed(s.spearman.point)}, regret {s.regret.point:.1f} "
                     f"(random {s.random_regret.point:.1f})")
    return [rows[key] for key in sorted(rows)]


# ---------------------------------------------------------------------------------------------
# Writing and the CLI


def make_selection(run_dirs: Sequence[str | Path], out: str | Path | None = None,
                   criteria: Sequence[str] | None = None, reps: int = DEFAULT_REPS,
                   seed: int = 0, figures: bool = True,
                   all_runs: bool = False) -> tuple[SelectionResult, list[Path]]:
    """Select configurations and checkpoints and write the outputs into `out` (default
    FIRST_DIR/selection); returns the result and the written paths."""
    result = run_selection(run_dirs, criteria, reps, seed, all_runs=all_runs)
    out = Path(out) if out is not None else Path(run_dirs[0]) / "selection"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; pass a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in OUTPUT_FILES:  # nothing left behind from an earlier selection
            (out / name).unlink(missing_ok=True)
        written = write_tables(out, result)
        pngs: list[Path] = []
        if figures and result.configurations:
            from seqeval.figures import selection_figure

            rows = selection_panels(result, criteria)
            if rows:
                paths = selection_figure(rows, out / "selection")
                written += paths
                pngs = [p for p in paths if p.suffix == ".png"]
        markdown = out / "selection.md"
        markdown.write_text(render_markdown(result, pngs))
    except OSError as error:
        raise UserError(f"cannot write the selection into '{out}' ({error.strerror or error}); "
                        "choose another --out") from None
    return result, [markdown, *written]


def handler(args: argparse.Namespace) -> int:
    result, paths = make_selection(args.study_dirs, args.out, args.criterion, args.reps,
                                   args.seed, figures=not args.no_figures,
                                   all_runs=args.all_runs)
    print_table(result)
    for note in result.incomplete:
        print(note)
    print(f"selection: {paths[0]}")
    for path in paths[1:]:
        print(f"  {path}")
    return 0


def register(subparsers: Any) -> None:
    """Add `seqeval select` to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "select", help="pick configurations and checkpoints without the environment, and "
                       "measure how well that agrees with it",
        description="Rank each agent's configurations on each dataset of a study by criteria "
                    "computed without the environment (prequential losses, Q on the dataset's "
                    "actions, training losses) and compare with the environment's scores: rank "
                    "correlations with bootstrap CIs, regret of the top pick, a random pick. "
                    "Writes selection.md, CSV tables and a figure (docs/selection.md).")
    parser.add_argument("study_dirs", nargs="+", metavar="STUDY_DIR",
                        help="a study directory (or run directories)")
    parser.add_argument("--criterion", action="append", default=None, metavar="NAME",
                        help="only this criterion (repeatable; default: every criterion the "
                             "runs record)")
    parser.add_argument("--out", default=None,
                        help="output directory (default STUDY_DIR/selection)")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS,
                        help=f"bootstrap resamples (default {DEFAULT_REPS:,})")
    parser.add_argument("--seed", type=bootstrap_seed, default=0,
                        help="bootstrap seed (default 0)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    from seqeval.study import add_all_runs_flag

    add_all_runs_flag(parser)
    parser.set_defaults(func=handler)
