"""What `seqeval select` writes and shows of a selection (seqeval.select computes it): the CSV
tables, selection.md, the plain-text table it prints, and the panels of its figure."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seqeval import stats
from seqeval.criteria import Criterion
from seqeval.csvfile import write_csv
from seqeval.select import Cell, Selection, SelectionResult, chosen_criteria
from seqeval.tables import interval_cells, markdown_table, with_ci

# Drawn by default in the figure, per agent: the first available of each tuple.
HEADLINE = (("action_nll_dl", "action_mse_dl"), ("td_error_dl",), ("q_value_mean",))


# ---------------------------------------------------------------------------------------------
# Tables


def write_tables(out: Path, result: SelectionResult) -> list[Path]:
    paths = [out / "selection.csv", out / "checkpoints.csv", out / "configurations.csv"]
    rows = []
    for s in result.configurations:
        cell, configurations = s.cell, s.cell.configurations
        rows.append([cell.dataset, cell.agent, cell.mode, s.criterion.name,
                     s.criterion.direction, s.truth, len(configurations),
                     min(len(c.seeds) for c in configurations), *interval_cells(s.spearman),
                     *interval_cells(s.kendall), *interval_cells(s.regret),
                     *interval_cells(s.random_regret),
                     s.pick_rank, configurations[s.picked].label, s.truth_means[s.picked],
                     s.tied, configurations[s.best].label, s.truth_means[s.best]])
    write_csv(paths[0], ["dataset", "agent", "mode", "criterion", "direction", "truth",
                         "configurations", "seeds", "spearman", "spearman_ci_low",
                         "spearman_ci_high", "kendall", "kendall_ci_low", "kendall_ci_high",
                         "regret", "regret_ci_low", "regret_ci_high", "random_regret",
                         "random_regret_ci_low", "random_regret_ci_high", "pick_rank",
                         "picked", "picked_truth", "tied_at_top", "best", "best_truth"], rows)
    rows = [[s.cell.dataset, s.cell.agent, s.cell.mode, s.criterion.name, s.criterion.direction,
             s.runs, s.configurations, s.candidates, *interval_cells(s.regret),
             *interval_cells(s.final_regret),
             *interval_cells(s.random_regret), s.hit_rate, *interval_cells(s.spearman)]
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
    """selection.md: what was compared and how, which criterion to trust, a table per agent x
    dataset, the checkpoint table, the figure and the notes."""
    lines = _introduction(result)
    if result.configurations:
        lines += _trust_section(result)
        lines += ["", "## Configurations, per agent and dataset"]
    for cell in result.cells:
        lines += _cell_section(cell, [s for s in result.configurations if s.cell is cell])
    if result.checkpoints:
        lines += _checkpoint_section(result)
    if figures:
        lines += ["", "## Figure", ""]
        lines += [f"![{figure.stem}]({figure.name})" for figure in figures]
        lines += ["", "Each point is a configuration (mean over seeds, 95% t intervals); the "
                  "open circle is the criterion's pick, the star the best configuration in "
                  "the environment. PDF beside the PNG."]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def _introduction(result: SelectionResult) -> list[str]:
    cells = result.cells
    agents = sorted({c.agent for c in cells})
    datasets = sorted({c.dataset for c in cells})
    total = sum(len(c.configurations) for c in cells)
    return [
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


def _trust_section(result: SelectionResult) -> list[str]:
    lines = ["", "## Which criterion to trust", "",
             "Per agent and criterion, averaged over datasets: Spearman correlation with "
             "each truth, and the regret of the top pick (final score) against a random "
             "pick's; *CI > 0 / < 0*: datasets where the Spearman correlation's interval "
             "lies above / below zero (final score); *beats random*: datasets where the "
             "pick's regret was below a random pick's.", ""]
    return lines + markdown_table(["agent", "criterion", "direction", "Spearman (final)",
                                   "CI > 0 / < 0", "Spearman (AUC)", "regret (final)",
                                   "random regret", "beats random"], _summary_rows(result))


def _cell_section(cell: Cell, selections: list[Selection]) -> list[str]:
    """One agent x dataset: its configurations, and per criterion the correlations, the regret
    and the pick ([] where nothing was selected)."""
    if not selections:
        return []
    final = {s.criterion.name: s for s in selections if s.truth == "final"}
    auc = {s.criterion.name: s for s in selections if s.truth == "auc"}
    first = next(iter(final.values()))
    seeds = sorted({len(c.seeds) for c in cell.configurations})
    best = cell.configurations[first.best]
    unit = "" if cell.normalized else " (raw return)"
    lines = ["", f"### {cell.title}", "",
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
    return lines + markdown_table(["criterion", "direction", "Spearman (final)",
                                   "Kendall (final)", "regret (final)", "pick (rank by final)",
                                   "Spearman (AUC)", "regret (AUC)"], rows)


def _checkpoint_section(result: SelectionResult) -> list[str]:
    lines = [
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
    return lines + markdown_table(["dataset", "agent", "criterion", "direction", "runs",
                                   "configs", "candidates", "regret", "final model", "random",
                                   "hit rate", "Spearman"], rows)


def print_table(result: SelectionResult) -> None:
    """The configuration selection against the final score, as aligned plain text."""
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
        return chosen_criteria(cell.criteria, names)
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
