"""`seqeval report RUN_DIR... [--out DIR]`: compare agents across runs, datasets and seeds.

Run directories are grouped by dataset and method (seqeval.runs: agent, agent config, mode and
protocol settings); the seeds of all run directories of a group are pooled. For each group and
seed the curve is summarised (final score, normalized area under the curve, samples to 90% of
the final score); across datasets the per-seed final scores and areas are aggregated (IQM,
median, mean, optimality gap) with stratified-bootstrap CIs and compared pairwise (probability
of improvement). Outputs in the out dir:

    report.md                          tables, notes and the figures, readable on GitHub
    per_dataset.csv                    one row per dataset x agent
    aggregates.csv                     one row per agent x measure x aggregate
    probability_of_improvement.csv     one row per pair of agents x measure
    prequential.csv                    one row per dataset x agent x metric (when runs have one)
    curves.{png,pdf}, aggregates.{png,pdf}, probability_of_improvement.{png,pdf}

docs/report.md defines every number and explains how to read the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqeval import stats
from seqeval.csvfile import write_csv
from seqeval.errors import UserError
from seqeval.runs import Group, SeedCurve, is_cumulative, load_groups
from seqeval.tables import interval_cells, markdown_table, with_ci

OUTPUT_FILES = ("report.md", "per_dataset.csv", "aggregates.csv",
                "probability_of_improvement.csv", "prequential.csv",
                *(f"{stem}.{ext}" for stem in ("curves", "aggregates", "probability_of_improvement")
                  for ext in ("png", "pdf")))


# ---------------------------------------------------------------------------------------------
# Per dataset x agent


@dataclasses.dataclass
class SeedSummary:
    seed: int
    final: float
    auc: float
    samples_to_90: float
    final_online: float  # NaN without an online phase
    auc_online: float


def summarise_seed(curve: SeedCurve, dataset_size: int, normalized: bool) -> SeedSummary:
    """Final score, normalized AUC on [0, N] and samples to 90% of the final, offline phase;
    final score and normalized AUC of the online phase when there is one."""
    samples, values = curve.offline_samples, curve.offline_values
    end = max(dataset_size, int(samples.max()))
    # On raw returns 0 is not the random policy, so 90% is taken of the rise above the curve's
    # lowest point instead.
    baseline = 0.0 if normalized else float(values.min())
    final_online = auc_online = math.nan
    if curve.online.any():
        on_samples, on_values = curve.samples[curve.online], curve.values[curve.online]
        final_online = float(on_values[-1])
        if on_samples.max() > end:
            auc_online = stats.normalized_auc(on_samples, on_values, start=end,
                                              end=float(on_samples.max()))
    return SeedSummary(
        seed=curve.seed,
        final=float(values[-1]),
        auc=stats.normalized_auc(samples, values, end=end),
        samples_to_90=stats.samples_to_fraction(samples, values, 0.9, baseline),
        final_online=final_online,
        auc_online=auc_online,
    )


@dataclasses.dataclass
class GroupSummary:
    group: Group
    seeds: list[SeedSummary]
    final: stats.Interval
    auc: stats.Interval
    samples_to_90: stats.Interval
    final_online: stats.Interval
    auc_online: stats.Interval


def summarise_group(group: Group) -> GroupSummary:
    per_seed = [summarise_seed(c, group.dataset_size, group.normalized) for c in group.seeds]

    def spread(field: str) -> stats.Interval:
        return stats.t_interval([getattr(s, field) for s in per_seed])

    return GroupSummary(group, per_seed, spread("final"), spread("auc"), spread("samples_to_90"),
                        spread("final_online"), spread("auc_online"))


# ---------------------------------------------------------------------------------------------
# Across datasets


@dataclasses.dataclass
class Comparison:
    """Aggregates per method and measure, and probability of improvement per pair."""

    datasets: list[str]  # the tasks the aggregates are over
    aggregates: dict[str, dict[str, dict[str, stats.Interval]]]  # method -> measure -> name
    runs: dict[str, int]  # method -> runs per task in the aggregate matrix
    improvement: list[tuple[str, str, str, stats.Interval, int]]  # x, y, measure, P, tasks
    notes: list[str]


def _score_matrix(summaries: list[GroupSummary], measure: str) -> np.ndarray:
    # (runs x tasks) with equal runs per task: the first n seeds (by seed) of each task, n being
    # the smallest count, as the stratified bootstrap and rliable need a rectangular matrix.
    runs = min(len(s.seeds) for s in summaries)
    return np.array([[getattr(seed, measure) for seed in s.seeds[:runs]] for s in summaries]).T


def aggregate_tasks(by_method: dict[str, dict[str, GroupSummary]]
                    ) -> tuple[list[str], list[str], list[str]]:
    """(datasets, methods, notes) of the aggregate table. Aggregates are comparable only over
    one set of datasets: the datasets with normalized scores shared by the methods that cover
    the most of them. A method that misses one of those (a baseline run on one dataset, say) is
    left out of the aggregates rather than shrinking everyone's set."""
    notes = []
    normalized = {m: {d for d, s in cells.items() if s.group.normalized}
                  for m, cells in by_method.items()}
    raw = sorted({d for cells in by_method.values() for d, s in cells.items()
                  if not s.group.normalized})
    if raw:
        notes.append("aggregates leave out datasets without normalized scores ("
                     + ", ".join(raw) + "): raw returns of different datasets cannot be pooled")
    widest = max((len(v) for v in normalized.values()), default=0)
    if widest == 0:
        return [], [], notes
    tasks = set.intersection(*(v for v in normalized.values() if len(v) == widest))
    methods = sorted(m for m, v in normalized.items() if tasks <= v)
    for method in sorted(set(by_method) - set(methods)):
        missing = ", ".join(sorted(tasks - normalized[method]))
        notes.append(f"{method} is left out of the aggregates: not run on {missing}")
    extra = sorted(set().union(*normalized.values()) - tasks)
    if extra:
        notes.append("aggregates are over " + ", ".join(sorted(tasks)) + "; left out (not "
                     "run by every aggregated agent): " + ", ".join(extra))
    return sorted(tasks), methods, notes


def compare(summaries: list[GroupSummary], reps: int = stats.DEFAULT_REPS,
            seed: int = 0) -> Comparison:
    """Aggregates over one set of datasets (see aggregate_tasks) and the probability of
    improvement for each pair of methods over the datasets both were run on."""
    by_method: dict[str, dict[str, GroupSummary]] = defaultdict(dict)
    for summary in summaries:
        by_method[summary.group.label][summary.group.dataset] = summary
    methods = sorted(by_method)
    all_datasets = sorted({s.group.dataset for s in summaries})
    tasks, aggregated, notes = aggregate_tasks(by_method)

    aggregates: dict[str, dict[str, dict[str, stats.Interval]]] = {}
    runs: dict[str, int] = {}
    if tasks:
        for method in aggregated:
            cells = [by_method[method][d] for d in tasks]
            counts = {len(c.seeds) for c in cells}
            runs[method] = min(counts)
            if len(counts) > 1:
                notes.append(f"{method}: datasets have different numbers of seeds; the "
                             f"aggregates use the first {runs[method]} seeds of each")
            aggregates[method] = {
                measure: stats.aggregate_intervals(_score_matrix(cells, measure), reps=reps,
                                                   seed=seed)
                for measure in stats.MEASURES
            }

    improvement = []
    for x, y in itertools.combinations(methods, 2):
        shared = [d for d in all_datasets if d in by_method[x] and d in by_method[y]]
        if not shared:
            notes.append(f"{x} and {y} share no dataset; no probability of improvement")
            continue
        pair = []
        for measure in stats.MEASURES:
            # Rank-based within each dataset, so raw returns are as good as normalized scores
            # here (normalization is increasing and affine per dataset).
            mx = _score_matrix([by_method[x][d] for d in shared], measure)
            my = _score_matrix([by_method[y][d] for d in shared], measure)
            interval = stats.probability_of_improvement_interval(mx, my, reps=reps, seed=seed)
            pair.append((x, y, measure, interval, len(shared)))
        # State each pair as "better > worse" by final score: P(Y > X) = 1 - P(X > Y) exactly
        # (ties count 1/2), resample by resample, so the interval flips to [1 - high, 1 - low].
        if pair[0][3].point < 0.5:
            pair = [(y, x, m, stats.Interval(1 - p.point, 1 - p.high, 1 - p.low), n)
                    for x, y, m, p, n in pair]
        improvement.extend(pair)
    return Comparison(tasks, aggregates, runs, improvement, notes)


# ---------------------------------------------------------------------------------------------
# Prequential summaries


@dataclasses.dataclass
class PrequentialSummary:
    dataset: str
    method: str
    metric: str
    seeds: int
    last: stats.Interval  # value at the last evaluation point (a cumulative metric's total)
    average: stats.Interval  # a per-chunk loss's mean over all scored transitions


def summarise_prequential(group: Group) -> list[PrequentialSummary]:
    names = sorted({n for p in group.prequential for n in p.metrics})
    out = []
    for name in names:
        scored = [p for p in group.prequential if name in p.metrics]
        curves = [p.metrics[name] for p in scored]
        averages = []
        for p in scored:
            # Chunks can differ in size (the last one is short): weighting each chunk's mean
            # loss by its transitions gives the loss per transition over the whole run, i.e.
            # the description length divided by the transitions scored.
            _, values = p.metrics[name]
            weights = p.chunk_sizes.get(name, np.ones_like(values))
            averages.append(math.nan if is_cumulative(name) else
                            float(np.sum(values * weights) / np.sum(weights)))
        out.append(PrequentialSummary(
            dataset=group.dataset,
            method=group.label,
            metric=name,
            seeds=len(curves),
            last=stats.t_interval([values[-1] for _, values in curves]),
            average=stats.t_interval(averages),  # NaN for a running total: it means nothing
        ))
    return out


# ---------------------------------------------------------------------------------------------
# Writing


def _defined(seeds: Sequence[SeedSummary], field: str) -> tuple[int, int]:
    return sum(math.isfinite(getattr(s, field)) for s in seeds), len(seeds)


def _samples_text(interval: stats.Interval, defined: tuple[int, int]) -> str:
    if not math.isfinite(interval.point):
        return "n/a"
    text = f"{interval.point:,.0f}"
    if math.isfinite(interval.low):
        text += f" [{max(interval.low, 0):,.0f}, {interval.high:,.0f}]"
    if defined[0] < defined[1]:
        text += f" ({defined[0]} of {defined[1]} seeds)"
    return text


def write_tables(out: Path, summaries: list[GroupSummary], comparison: Comparison,
                 prequential: list[PrequentialSummary]) -> list[Path]:
    written = [out / "per_dataset.csv", out / "aggregates.csv",
               out / "probability_of_improvement.csv"]
    rows = []
    for s in summaries:
        g = s.group
        rows.append([g.dataset, g.method.name, g.mode, "normalized" if g.normalized else "return",
                     len(s.seeds), g.dataset_size, *interval_cells(s.final),
                     *interval_cells(s.auc), *interval_cells(s.samples_to_90),
                     *interval_cells(s.final_online), *interval_cells(s.auc_online)])
    cells = [f"{m}_{p}" for m in ("final", "auc", "samples_to_90", "final_online", "auc_online")
             for p in ("mean", "ci_low", "ci_high")]
    write_csv(written[0], ["dataset", "agent", "mode", "scale", "seeds", "dataset_size",
                            *cells], rows)
    rows = []
    for method, measures in comparison.aggregates.items():
        for measure, intervals in measures.items():
            for name, interval in intervals.items():
                rows.append([method, measure, name, *interval_cells(interval),
                             len(comparison.datasets), comparison.runs[method]])
    write_csv(written[1], ["agent", "measure", "aggregate", "estimate", "ci_low", "ci_high",
                            "datasets", "runs_per_dataset"], rows)
    rows = [[x, y, measure, *interval_cells(p), tasks]
            for x, y, measure, p, tasks in comparison.improvement]
    write_csv(written[2], ["agent_x", "agent_y", "measure", "probability_x_better", "ci_low",
                            "ci_high", "datasets"], rows)
    if prequential:
        written.append(out / "prequential.csv")
        rows = [[p.dataset, p.method, p.metric, p.seeds, *interval_cells(p.last),
                 *interval_cells(p.average)] for p in prequential]
        write_csv(written[-1], ["dataset", "agent", "metric", "seeds", "last_mean",
                                 "last_ci_low", "last_ci_high", "average_mean",
                                 "average_ci_low", "average_ci_high"], rows)
    return written


def render_markdown(summaries: list[GroupSummary], comparison: Comparison,
                    prequential: list[PrequentialSummary], notes: list[str],
                    figures: Sequence[Path], reps: int) -> str:
    """report.md: the per-dataset table, the aggregates across datasets, the probability of
    improvement, the prequential signal, the figures and the notes."""
    lines = _per_dataset_section(summaries)
    lines += _aggregate_section(comparison, reps)
    lines += _improvement_section(comparison)
    if prequential:
        lines += _prequential_section(prequential)
    if figures:
        lines += ["", "## Figures", ""]
        for figure in figures:
            lines += [f"![{figure.stem}]({figure.name})", ""]
        lines += ["PDF versions sit beside the PNGs."]
    all_notes = notes + comparison.notes
    if all_notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in all_notes]
    return "\n".join(lines) + "\n"


def _per_dataset_section(summaries: list[GroupSummary]) -> list[str]:
    groups = [s.group for s in summaries]
    datasets = sorted({g.dataset for g in groups})
    methods = sorted({g.label for g in groups})
    total_dirs = sum(len(g.runs) for g in groups)
    lines = [
        "# seqeval report",
        "",
        f"{total_dirs} run director{'y' if total_dirs == 1 else 'ies'}; "
        f"{len(methods)} agent{'s' if len(methods) != 1 else ''} ({', '.join(methods)}) on "
        f"{len(datasets)} dataset{'s' if len(datasets) != 1 else ''} ({', '.join(datasets)}).",
        "Scores are D4RL-normalized (0 = random, 100 = expert) unless marked *return*. "
        "Definitions and how to read the figures: docs/report.md in the seqeval repository.",
        "",
        "## Per dataset and agent",
        "",
        "Mean over seeds with a 95% Student-t interval [low, high]. *Final*: the last offline "
        "evaluation. *AUC*: the curve's average over samples 0..N (100 = expert from the first "
        "sample). *Samples to 90%*: first evaluation at 90% of the seed's own final score "
        "(undefined for a seed whose final score is not above random).",
        "",
    ]
    has_online = any(g.has_online for g in groups)
    header = ["dataset", "agent", "scale", "seeds", "final", "AUC", "samples to 90%"]
    if has_online:
        header += ["final online", "AUC online"]
    rows = []
    for s in summaries:
        g = s.group
        row = [g.dataset, g.label, "normalized" if g.normalized else "*return*",
               str(len(s.seeds)), with_ci(s.final), with_ci(s.auc),
               _samples_text(s.samples_to_90, _defined(s.seeds, "samples_to_90"))]
        if has_online:
            row += [with_ci(s.final_online), with_ci(s.auc_online)]
        rows.append(row)
    return lines + markdown_table(header, rows)


def _aggregate_section(comparison: Comparison, reps: int) -> list[str]:
    lines = ["", "## Across datasets", ""]
    if not comparison.aggregates:
        return lines + ["No aggregates: they need datasets with normalized scores that every "
                        "agent was run on."]
    lines += [
        f"Over {len(comparison.datasets)} dataset(s) ({', '.join(comparison.datasets)}); "
        "each seed of each dataset is one run. Point estimate with a 95% stratified-"
        f"bootstrap interval ({reps:,} resamples of the seeds within each dataset). "
        "Higher is better except for the optimality gap (100 minus the mean score "
        "clipped at 100).",
    ]
    for measure, title in stats.MEASURES.items():
        lines += ["", f"### {title[0].upper() + title[1:]}", ""]
        rows = [[m, str(comparison.runs[m])]
                + [with_ci(comparison.aggregates[m][measure][a]) for a in stats.AGGREGATES]
                for m in sorted(comparison.aggregates)]
        lines += markdown_table(
            ["agent", "runs per dataset",
             *(stats.AGGREGATE_TITLES[a] for a in stats.AGGREGATES)], rows)
    return lines


def _improvement_section(comparison: Comparison) -> list[str]:
    lines = ["", "## Probability of improvement", ""]
    if not comparison.improvement:
        return lines + ["Needs at least two agents run on a common dataset."]
    lines += [
        "P(X > Y): the chance that a seed of X scores higher than a seed of Y on the same "
        "dataset (ties count 1/2), averaged over the datasets both were run on, with a 95% "
        "stratified-bootstrap interval. Above 0.5 favours X; an interval that excludes 0.5 "
        "is a significant difference at the 5% level.",
        "",
    ]
    rows = [[x, y, stats.MEASURES[measure], with_ci(p, 2), str(tasks)]
            for x, y, measure, p, tasks in comparison.improvement]
    return lines + markdown_table(["X", "Y", "measure", "P(X > Y)", "datasets"], rows)


def _prequential_section(prequential: list[PrequentialSummary]) -> list[str]:
    lines = [
        "", "## Prequential signal", "",
        "Each chunk of data scored by the agent before it trains on it (no environment "
        "needed). *Last*: at the last evaluation point (for a cumulative metric, the "
        "total: the prequential description length). *Average*: a per-chunk loss averaged "
        "over all scored transitions (chunks weighted by their size). Mean over seeds with "
        "a 95% t interval; lower is better.",
        "",
    ]
    rows = [[p.dataset, p.method, p.metric, str(p.seeds), with_ci(p.last, 4, "g"),
             with_ci(p.average, 4, "g")] for p in prequential]
    return lines + markdown_table(["dataset", "agent", "metric", "seeds", "last", "average"],
                                  rows)


def make_report(run_dirs: Sequence[str | Path], out: str | Path, reps: int = stats.DEFAULT_REPS,
                seed: int = 0, figures: bool = True) -> list[Path]:
    """Write report.md, CSV tables and figures for the runs into `out`; returns written paths."""
    if reps < 1:
        raise UserError(f"--reps {reps}: the number of bootstrap resamples must be at least 1")
    groups, notes = load_groups(run_dirs)
    summaries = [summarise_group(g) for g in groups]
    comparison = compare(summaries, reps=reps, seed=seed)
    prequential = [p for g in groups for p in summarise_prequential(g)]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; pass a directory")
    try:
        return _write_report(out, groups, summaries, comparison, prequential, notes, reps,
                             figures)
    except OSError as error:
        raise UserError(f"cannot write the report into '{out}' ({error.strerror or error}); "
                        "choose another --out") from None


def _write_report(out: Path, groups: list[Group], summaries: list[GroupSummary],
                  comparison: Comparison, prequential: list[PrequentialSummary],
                  notes: list[str], reps: int, figures: bool) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    # A report written over an older one must not leave that one's tables or figures behind
    # (say a prequential.csv from runs no longer included); only our own file names go.
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    written = write_tables(out, summaries, comparison, prequential)
    figure_pngs: list[Path] = []
    if figures:
        from seqeval import figures as figs
        from seqeval.style import method_styles

        styles = method_styles(g.method for g in groups)
        paths = figs.curves_figure(groups, out / "curves", styles)
        if comparison.aggregates:
            paths += figs.aggregates_figure(comparison.aggregates, out / "aggregates", styles)
        if comparison.improvement:
            paths += figs.improvement_figure(comparison.improvement,
                                             out / "probability_of_improvement", styles)
        written += paths
        figure_pngs = [p for p in paths if p.suffix == ".png"]
    report = out / "report.md"
    report.write_text(render_markdown(summaries, comparison, prequential, notes, figure_pngs,
                                      reps))
    return [report, *written]


# ---------------------------------------------------------------------------------------------
# CLI


def bootstrap_seed(text: str) -> int:
    """argparse type of --seed: a whole number >= 0 (numpy's generators take no negative)."""
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise argparse.ArgumentTypeError(f"expects a whole number >= 0 (got '{text}')")
    return seed


def handler(args: argparse.Namespace) -> int:
    from seqeval.study import expand_run_dirs

    # a study directory -> its complete runs (of its current spec, unless --all-runs)
    args.run_dirs = expand_run_dirs(args.run_dirs, all_runs=args.all_runs)
    paths = make_report(args.run_dirs, args.out, reps=args.reps, seed=args.seed,
                        figures=not args.no_figures)
    print(f"report: {paths[0]}")
    for path in paths[1:]:
        print(f"  {path}")
    return 0


def register(subparsers: Any) -> None:
    """Add `seqeval report` to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "report", help="compare agents across runs: tables, statistics and figures",
        description="Gather run directories (several of the same agent and dataset are pooled "
                    "as more seeds) and write report.md, CSV tables and figures.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", default="report", help="output directory (default ./report)")
    parser.add_argument("--reps", type=int, default=stats.DEFAULT_REPS,
                        help=f"bootstrap resamples (default {stats.DEFAULT_REPS:,})")
    parser.add_argument("--seed", type=bootstrap_seed, default=0,
                        help="bootstrap seed (default 0)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    from seqeval.study import add_all_runs_flag

    add_all_runs_flag(parser)
    parser.set_defaults(func=handler)
