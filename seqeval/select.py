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

docs/selection.md defines every criterion and number. This module computes the selection; the
criteria are seqeval.criteria, the rank statistics seqeval.stats, and what is written and
shown seqeval.select_report.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqeval import stats
from seqeval.criteria import (
    Criterion,
    checkpoint_criteria,
    configuration_criteria,
    declared_metrics,
    directed,
)
from seqeval.errors import UserError
from seqeval.report import bootstrap_seed, summarise_seed
from seqeval.results import TRAINING_KEYS
from seqeval.runs import Group, Run, SeedCurve, load_groups

OUTPUT_FILES = ("selection.md", "selection.csv", "checkpoints.csv", "configurations.csv",
                "selection.png", "selection.pdf")
DEFAULT_REPS = 10_000  # bootstrap resamples: percentile bounds stable to about 0.01
# The truths a configuration is ranked against (report.summarise_seed's measures).
TRUTHS: dict[str, str] = {"final": "final score", "auc": "AUC"}


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
                            - set(directed(kept_prequential | kept_training, declared)))
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
# A bootstrap over seeds


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
                rho = stats.spearman(oriented, truth_values)
                rho_reps = stats.spearman(oriented_reps, truth_reps)
            tau = stats.kendall_tau_b(oriented, truth_values)
            tau_reps = np.concatenate([
                stats.kendall_tau_b(oriented_reps[i:i + size], truth_reps[i:i + size])
                for i, size in _blocks(reps, len(configurations))])
            out.append(Selection(
                cell=cell, criterion=criterion, truth=truth,
                spearman=_interval(float(rho), rho_reps),
                kendall=_interval(float(tau), tau_reps),
                regret=_interval(float(stats.pick_regret(oriented, truth_values)),
                                 stats.pick_regret(oriented_reps, truth_reps)),
                random_regret=_interval(float(stats.random_regret(truth_values)),
                                        stats.random_regret(truth_reps)),
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
        rho = float(stats.spearman(oriented, truth)) if len(candidates) >= 3 else math.nan
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


def chosen_criteria(available: Sequence[Criterion], names: Sequence[str] | None
                    ) -> list[Criterion]:
    """The criteria of `available` named in `names` (all of them when `names` is None)."""
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
                                                     chosen_criteria(cell.criteria, criteria))]
    checkpoints = [s for cell in cells
                   for s in select_checkpoints(cell, chosen_criteria(cell.checkpoint_criteria,
                                                             criteria))]
    return SelectionResult(cells, configurations, checkpoints, notes, reps, incomplete)




# ---------------------------------------------------------------------------------------------
# Writing and the CLI


def make_selection(run_dirs: Sequence[str | Path], out: str | Path | None = None,
                   criteria: Sequence[str] | None = None, reps: int = DEFAULT_REPS,
                   seed: int = 0, figures: bool = True,
                   all_runs: bool = False) -> tuple[SelectionResult, list[Path]]:
    """Select configurations and checkpoints and write the outputs into `out` (default
    FIRST_DIR/selection); returns the result and the written paths."""
    from seqeval import select_report

    result = run_selection(run_dirs, criteria, reps, seed, all_runs=all_runs)
    out = Path(out) if out is not None else Path(run_dirs[0]) / "selection"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; pass a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in OUTPUT_FILES:  # nothing left behind from an earlier selection
            (out / name).unlink(missing_ok=True)
        written = select_report.write_tables(out, result)
        pngs: list[Path] = []
        if figures and result.configurations:
            from seqeval.figures import selection_figure

            rows = select_report.selection_panels(result, criteria)
            if rows:
                paths = selection_figure(rows, out / "selection")
                written += paths
                pngs = [p for p in paths if p.suffix == ".png"]
        markdown = out / "selection.md"
        markdown.write_text(select_report.render_markdown(result, pngs))
    except OSError as error:
        raise UserError(f"cannot write the selection into '{out}' ({error.strerror or error}); "
                        "choose another --out") from None
    return result, [markdown, *written]


def handler(args: argparse.Namespace) -> int:
    result, paths = make_selection(args.study_dirs, args.out, args.criterion, args.reps,
                                   args.seed, figures=not args.no_figures,
                                   all_runs=args.all_runs)
    from seqeval import select_report

    select_report.print_table(result)
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
