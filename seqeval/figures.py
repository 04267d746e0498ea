"""Paper figures of a report: data-efficiency curves, aggregates with CIs, probability of
improvement. Every figure is written as PNG and PDF, sized for a paper (about 3.3 in per panel,
fonts >= 7 pt at that size), with one colour per agent (seqeval.style.agent_color) and one line
style per protocol mode everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seqeval import stats
from seqeval.style import MODE_LINESTYLES, PAPER_PANEL_WIDTH, PAPER_RC, agent_color

if TYPE_CHECKING:
    from seqeval.report import Group

MAX_COLUMNS = 3  # dataset panels per row of the curve grid


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_style(method: str) -> tuple[str, str]:
    """(colour, line style) of a report method name: "agent" or "agent (mode)"."""
    match = re.fullmatch(r"(.*) \((\w+)\)", method)
    agent, mode = (match.group(1), match.group(2)) if match else (method, "sequential")
    return agent_color(agent), MODE_LINESTYLES.get(mode, "-")


def _samples_label(value: float, _position: object = None) -> str:
    # 0, 500, 50k, 1.5M: compact tick labels for the samples axis.
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _save(fig, out_stem: Path) -> list[Path]:
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path)
    _pyplot().close(fig)
    return paths


def mean_curve(curves: Sequence[tuple[np.ndarray, np.ndarray]], confidence: float = 0.95
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(grid, mean, low, high) over seeds. The grid is every sample position of any seed; each
    seed is interpolated linearly within its own range and absent outside it. The band is the
    95% Student-t interval of the mean where two or more seeds are present (NaN elsewhere)."""
    grid = np.unique(np.concatenate([np.asarray(s, dtype=np.float64) for s, _ in curves]))
    table = np.full((len(curves), grid.size), np.nan)
    for i, (samples, values) in enumerate(curves):
        samples = np.asarray(samples, dtype=np.float64)
        inside = (grid >= samples.min()) & (grid <= samples.max())
        table[i, inside] = np.interp(grid[inside], samples, values)
    count = np.sum(~np.isnan(table), axis=0)
    mean = np.nanmean(table, axis=0)
    low = np.full(grid.size, np.nan)
    high = np.full(grid.size, np.nan)
    for j in np.flatnonzero(count >= 2):
        interval = stats.t_interval(table[:, j], confidence)
        low[j], high[j] = interval.low, interval.high
    return grid, mean, low, high


def _drawn_prequential_metrics(groups: Sequence[Group]) -> list[str]:
    # Per-chunk losses are what shows how well each new chunk was predicted; cumulative totals
    # (monotone by construction) are drawn only when a run stores nothing else.
    from seqeval.report import is_cumulative

    names = sorted({n for g in groups for p in g.prequential for n in p.metrics})
    per_chunk = [n for n in names if not is_cumulative(n)]
    return per_chunk or names


def curves_figure(groups: Sequence[Group], out_stem: Path | str) -> list[Path]:
    """A panel per dataset, a line per agent (mean over seeds, 95% t band), the dataset-average
    line, the offline->online line; prequential metrics, when runs have them, in panels under
    each dataset's curve. Returns the PNG and PDF paths."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    datasets = sorted({g.dataset for g in groups})
    metrics = _drawn_prequential_metrics(groups)
    columns = min(MAX_COLUMNS, len(datasets))
    blocks = math.ceil(len(datasets) / columns)
    per_block = 1 + len(metrics)
    ratios = ([1.0] + [0.55] * len(metrics)) * blocks
    with plt.rc_context(PAPER_RC):
        fig = plt.figure(figsize=(PAPER_PANEL_WIDTH * columns, sum(ratios) * 2.3 + 0.4),
                         layout="constrained")
        grid = fig.add_gridspec(per_block * blocks, columns, height_ratios=ratios)
        legend: dict[str, tuple[str, str]] = {}
        for index, dataset in enumerate(datasets):
            block, column = divmod(index, columns)
            top = block * per_block
            ax = fig.add_subplot(grid[top, column])
            under = [fig.add_subplot(grid[top + 1 + k, column], sharex=ax)
                     for k in range(len(metrics))]
            members = [g for g in groups if g.dataset == dataset]
            _draw_returns(ax, members, legend)
            ax.set_title(dataset)
            for metric, pax in zip(metrics, under, strict=True):
                _draw_prequential(pax, members, metric)
            online = any(g.has_online for g in members)
            for axis in [ax, *under]:
                if online:
                    axis.axvline(members[0].dataset_size, color="black", linestyle="--",
                                 linewidth=0.7, alpha=0.7)
                axis.grid(alpha=0.3)
                axis.xaxis.set_major_formatter(FuncFormatter(_samples_label))
                axis.set_xlim(left=0)  # the axis the AUC is taken over starts at no data
            for axis in [ax, *under][:-1]:
                axis.tick_params(labelbottom=False)
            ([ax, *under][-1]).set_xlabel("samples")
        handles = [plt.Line2D([], [], color=c, linestyle=s, label=m)
                   for m, (c, s) in sorted(legend.items())]
        fig.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 5),
                   frameon=False)
        return _save(fig, Path(out_stem))


def _draw_returns(ax, members: Sequence[Group], legend: dict[str, tuple[str, str]]) -> None:
    for group in members:
        color, style = method_style(group.method)
        legend[group.method] = (color, style)
        grid, mean, low, high = mean_curve([(s.samples, s.values) for s in group.seeds])
        marker = "o" if group.mode == "retrain" else None
        ax.plot(grid, mean, linestyle=style, color=color, marker=marker, markersize=2.5)
        ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
    normalized = all(g.normalized for g in members)
    info = members[0].dataset_info
    level = info.get("average_normalized_return") if normalized else info.get("average_return")
    if level is not None and (normalized or not any(g.normalized for g in members)):
        ax.axhline(level, color="black", linestyle="--", linewidth=0.7, alpha=0.6)
        ax.annotate("dataset avg.", (0.01, level), xycoords=("axes fraction", "data"),
                    xytext=(0, 2), textcoords="offset points", fontsize=7, alpha=0.7)
    if normalized:
        ax.set_ylabel("normalized score")
    elif not any(g.normalized for g in members):
        ax.set_ylabel("return")
    else:
        ax.set_ylabel("score (mixed: normalized and return)")


def _draw_prequential(ax, members: Sequence[Group], metric: str) -> None:
    ax.set_ylabel(metric.replace("_", " "))
    if not any(metric in p.metrics for g in members for p in g.prequential):
        ax.text(0.5, 0.5, "no prequential data", transform=ax.transAxes, ha="center",
                va="center", fontsize=7, alpha=0.6)
        ax.tick_params(labelleft=False, left=False)
        return
    positive = True
    for group in members:
        curves = [p.metrics[metric] for p in group.prequential if metric in p.metrics]
        if not curves:
            continue
        color, style = method_style(group.method)
        grid, mean, low, high = mean_curve(curves)
        ax.plot(grid, mean, linestyle=style, color=color)
        ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
        positive = positive and bool(np.all(mean > 0))
    lines = ax.get_lines()
    if positive and lines:
        values = np.concatenate([line.get_ydata() for line in lines])
        if values.max() > 10 * values.min():  # losses spanning decades read better on a log axis
            ax.set_yscale("log")


def _interval_rows(ax, labels: Sequence[str], intervals: Sequence[stats.Interval],
                   colors: Sequence[str]) -> None:
    # One row per item, best-known layout of rliable's plots: a bar spanning the CI and a tick
    # at the point estimate; the first item on top.
    y = np.arange(len(labels))[::-1]
    for row, interval, color in zip(y, intervals, colors, strict=True):
        low = interval.low if math.isfinite(interval.low) else interval.point
        high = interval.high if math.isfinite(interval.high) else interval.point
        ax.barh(row, max(high - low, 1e-9), left=low, height=0.6, color=color, alpha=0.65)
        ax.plot([interval.point] * 2, [row - 0.3, row + 0.3], color="black", linewidth=1.2)
    ax.set_yticks(y, labels)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.grid(axis="x", alpha=0.3)


def aggregates_figure(aggregates: dict[str, dict[str, dict[str, stats.Interval]]],
                      out_stem: Path | str) -> list[Path]:
    """IQM, median, mean and optimality gap with 95% CI bars: a row per measure (final score,
    AUC), a column per aggregate, a bar per agent."""
    plt = _pyplot()
    from seqeval.report import MEASURES

    methods = sorted(aggregates)
    measures = [m for m in MEASURES if all(m in aggregates[x] for x in methods)]
    height = 0.25 * len(methods) + 0.75
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(len(measures), len(stats.AGGREGATES), squeeze=False,
                                 figsize=(2 * PAPER_PANEL_WIDTH, height * len(measures)),
                                 layout="constrained")
        colors = [method_style(m)[0] for m in methods]
        for r, measure in enumerate(measures):
            for c, name in enumerate(stats.AGGREGATES):
                ax = axes[r, c]
                _interval_rows(ax, methods, [aggregates[m][measure][name] for m in methods],
                               colors)
                if c:
                    ax.tick_params(labelleft=False)
                else:
                    ax.set_ylabel(MEASURES[measure])
                if r == 0:
                    ax.set_title(stats.AGGREGATE_TITLES[name])
        return _save(fig, Path(out_stem))


def improvement_figure(improvement: Sequence[tuple[str, str, str, stats.Interval, int]],
                       out_stem: Path | str) -> list[Path]:
    """P(X > Y) with 95% CI bars per pair of agents, a panel per measure; bars in X's colour."""
    plt = _pyplot()
    from seqeval.report import MEASURES

    measures = [m for m in MEASURES if any(row[2] == m for row in improvement)]
    pairs = sorted({(x, y) for x, y, *_ in improvement})
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(1, len(measures), squeeze=False,
                                 figsize=(PAPER_PANEL_WIDTH * len(measures),
                                          0.25 * len(pairs) + 0.9),
                                 layout="constrained")
        for c, measure in enumerate(measures):
            ax = axes[0, c]
            found = {(x, y): p for x, y, m, p, _ in improvement if m == measure}
            shown = [pair for pair in pairs if pair in found]
            _interval_rows(ax, [f"{x} > {y}" for x, y in shown], [found[p] for p in shown],
                           [method_style(x)[0] for x, _ in shown])
            ax.axvline(0.5, color="black", linestyle="--", linewidth=0.7, alpha=0.7)
            ax.set_xlim(0.0, 1.0)
            ax.set_xlabel("P(X > Y)")
            ax.set_title(MEASURES[measure])
            if c:
                ax.tick_params(labelleft=False)
        return _save(fig, Path(out_stem))
