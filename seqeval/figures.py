"""Every figure seqeval draws: data-efficiency curves (used by `seqeval report`, `seqeval plot`
and the demo), aggregates with CIs, probability of improvement, and model selection (a criterion
against the true score, `seqeval select`). Each is written as PNG and PDF,
sized for a paper (about 3.3 in per panel, fonts >= 7 pt at that size), with the colours and
line styles of seqeval.style.method_styles.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seqeval import stats
from seqeval.errors import UserError
from seqeval.runs import Group, is_cumulative
from seqeval.style import (
    BAND_LEGEND,
    MIN_SEEDS_FOR_BAND,
    PAPER_PANEL_WIDTH,
    PAPER_RC,
    SAMPLES_LABEL,
    SEEDS_LEGEND,
    Styles,
    method_styles,
)

MAX_COLUMNS = 3  # dataset panels per row of the curve grid
BAND_ALPHA = 0.15
SEED_ALPHA = 0.45  # the thin per-seed lines drawn instead of a band below MIN_SEEDS_FOR_BAND
SEED_LINEWIDTH = 0.6
AVERAGE_LABEL = "dataset average"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _samples_label(value: float, _position: object = None) -> str:
    # 0, 500, 50k, 1.5M: compact tick labels for the samples axis.
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _save(fig, out_stem: Path) -> list[Path]:
    """Write OUT_STEM.png and OUT_STEM.pdf; UserError when they cannot be written."""
    plt = _pyplot()
    paths = [out_stem.parent / f"{out_stem.name}.png", out_stem.parent / f"{out_stem.name}.pdf"]
    try:
        out_stem.parent.mkdir(parents=True, exist_ok=True)
        for path in paths:
            fig.savefig(path)
    except OSError as error:
        raise UserError(f"cannot write '{error.filename or paths[0]}' ({error.strerror or error}); "
                        "choose another output path") from None
    finally:
        plt.close(fig)
    return paths


def mean_curve(curves: Sequence[tuple[np.ndarray, np.ndarray]], confidence: float = 0.95
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(grid, mean, low, high) over seeds: the band of every figure. The grid is every sample
    position of any seed; each seed is interpolated linearly within its own range and absent
    outside it. The band is the 95% Student-t interval of the mean, the interval the report's
    tables give, where two or more seeds are present (NaN elsewhere)."""
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


# ---------------------------------------------------------------------------------------------
# Data-efficiency curves


def _drawn_prequential_metrics(groups: Sequence[Group]) -> list[str]:
    # Per-chunk losses are what shows how well each new chunk was predicted; cumulative totals
    # (monotone by construction) are drawn only when a run stores nothing else.
    names = sorted({n for g in groups for p in g.prequential for n in p.metrics})
    per_chunk = [n for n in names if not is_cumulative(n)]
    return per_chunk or names


def curves_figure(groups: Sequence[Group], out_stem: Path | str, styles: Styles | None = None,
                  prequential: bool = True, title: str | None = None,
                  panel_width: float = PAPER_PANEL_WIDTH) -> list[Path]:
    """A panel per dataset, a line per method (mean over seeds, with a 95% t band from 3 seeds
    on and each seed's thin line below that; retraining at each size as points with their
    interval, or each seed's points), the dataset-average line, and the online phase after
    a dashed vertical line where the dataset ends. With `prequential`, the runs' prequential
    metrics in panels under each dataset's curve; `title` replaces a single panel's title (the
    dataset) or heads several. Returns the PNG and PDF paths."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    styles = styles or method_styles(g.method for g in groups)
    datasets = sorted({g.dataset for g in groups})
    metrics = _drawn_prequential_metrics(groups) if prequential else []
    columns = min(MAX_COLUMNS, len(datasets))
    blocks = math.ceil(len(datasets) / columns)
    per_block = 1 + len(metrics)
    ratios = ([1.0] + [0.55] * len(metrics)) * blocks
    with plt.rc_context(PAPER_RC):
        height = sum(ratios) * 2.3 * max(1.0, panel_width / PAPER_PANEL_WIDTH) ** 0.5
        fig = plt.figure(figsize=(panel_width * columns, height + 0.5), layout="constrained")
        grid = fig.add_gridspec(per_block * blocks, columns, height_ratios=ratios)
        shown: dict[str, str] = {}  # label -> mode, in the order drawn
        spreads: set[str] = set()  # "band" and/or "seeds": how the spread over seeds is drawn
        for index, dataset in enumerate(datasets):
            block, column = divmod(index, columns)
            top = block * per_block
            ax = fig.add_subplot(grid[top, column])
            under = [fig.add_subplot(grid[top + 1 + k, column], sharex=ax)
                     for k in range(len(metrics))]
            members = [g for g in groups if g.dataset == dataset]
            spreads |= _draw_returns(ax, members, styles)
            shown.update({g.label: g.mode for g in members})
            ax.set_title(title if title and len(datasets) == 1 else dataset)
            for metric, pax in zip(metrics, under, strict=True):
                spreads |= _draw_prequential(pax, members, metric, styles)
            online = [g for g in members if g.has_online]
            for axis in [ax, *under]:
                if online:
                    axis.axvline(online[0].dataset_size, color="black", linestyle="--",
                                 linewidth=0.7, alpha=0.7)
                axis.grid(alpha=0.3)
                axis.xaxis.set_major_formatter(FuncFormatter(_samples_label))
                axis.set_xlim(left=0)  # the axis the AUC is taken over starts at no data
            if online:
                _label_phases(ax, online[0].dataset_size)
            for axis in [ax, *under][:-1]:
                axis.tick_params(labelbottom=False)
            ([ax, *under][-1]).set_xlabel(SAMPLES_LABEL)
        handles = [plt.Line2D([], [], color=styles[label][0], linestyle=styles[label][1],
                              label=label, marker="o" if mode == "retrain" else None,
                              markersize=3)
                   for label, mode in shown.items()]
        if any(_average_level(g for g in groups if g.dataset == d) is not None for d in datasets):
            handles.append(plt.Line2D([], [], color="black", linestyle="--", linewidth=0.7,
                                      alpha=0.6, label=AVERAGE_LABEL))
        if "band" in spreads:
            from matplotlib.patches import Patch

            handles.append(Patch(facecolor="0.4", alpha=BAND_ALPHA * 2, label=BAND_LEGEND))
        if "seeds" in spreads:
            handles.append(plt.Line2D([], [], color="0.3", linewidth=SEED_LINEWIDTH,
                                      alpha=SEED_ALPHA, label=SEEDS_LEGEND))
        if columns == 1:  # one panel: the legend as a list to its right
            fig.legend(handles=handles, loc="outside right upper", frameon=False)
        else:
            fig.legend(handles=handles, loc="outside lower center", frameon=False,
                       ncol=min(len(handles), 5))
        if title and len(datasets) > 1:
            fig.suptitle(title)
        return _save(fig, Path(out_stem))


def _average_level(members) -> float | None:
    # The behaviour policy's level: the dataset's average normalized return (or average return
    # when every method on it is on raw returns).
    members = list(members)
    normalized = [g.normalized for g in members]
    info = members[0].dataset_info
    if all(normalized):
        return info.get("average_normalized_return")
    return None if any(normalized) else info.get("average_return")


def spread_drawn(seeds: int) -> str | None:
    """How a curve's spread over `seeds` seeds is drawn: "band" (95% t interval of the mean),
    "seeds" (each seed as a thin line: fewer than MIN_SEEDS_FOR_BAND) or None (one seed)."""
    if seeds >= MIN_SEEDS_FOR_BAND:
        return "band"
    return "seeds" if seeds >= 2 else None


def _draw_returns(ax, members: Sequence[Group], styles: Styles) -> set[str]:
    """The panel of scores; returns how the spread over seeds was drawn (see spread_drawn)."""
    drawn = []  # every mean and reference level: what the y-axis is fitted to
    spreads = set()
    for group in members:
        color, style = styles[group.label]
        grid, mean, low, high = mean_curve([(s.samples, s.values) for s in group.seeds])
        drawn.append(mean)
        spread = spread_drawn(len(group.seeds))
        spreads.add(spread)
        if group.mode == "retrain" and spread == "seeds":
            # Separate agents at each size: the mean's points, each seed's as small dots.
            ax.plot(grid, mean, color=color, linestyle=style, linewidth=0.8, marker="o",
                    markersize=3, zorder=3)
            for seed in group.seeds:
                ax.plot(seed.samples, seed.values, color=color, linestyle="none", marker=".",
                        markersize=3, alpha=SEED_ALPHA)
        elif group.mode == "retrain":
            # Separate agents at each size: points with their interval, joined only faintly.
            errors = np.nan_to_num(np.stack([mean - low, high - mean]))
            ax.errorbar(grid, mean, yerr=errors, color=color, linestyle=style, linewidth=0.8,
                        marker="o", markersize=3, capsize=2, elinewidth=0.7, zorder=3)
        else:
            ax.plot(grid, mean, linestyle=style, color=color)
            _draw_spread(ax, spread, grid, low, high, [(s.samples, s.values)
                                                       for s in group.seeds], color, style)
    level = _average_level(members)
    if level is not None:
        ax.axhline(level, color="black", linestyle="--", linewidth=0.7, alpha=0.6)
        drawn.append(np.array([level]))
    # The axis follows the means with room around them; a band wider than that (few seeds) is
    # cut at the edge of the panel instead of squashing every curve into a thin strip.
    values = np.concatenate(drawn)
    low, high = float(np.min(values)), float(np.max(values))
    pad = 0.3 * (high - low) if high > low else max(1.0, abs(high))
    ax.set_ylim(low - pad, high + pad)
    normalized = [g.normalized for g in members]
    ax.set_ylabel("normalized score" if all(normalized) else
                  "return" if not any(normalized) else "score (mixed: normalized and return)")
    return spreads - {None}


def _draw_spread(ax, spread: str | None, grid, low, high,
                 curves: Sequence[tuple[np.ndarray, np.ndarray]], color: str, style: str) -> None:
    if spread == "band":
        ax.fill_between(grid, low, high, color=color, alpha=BAND_ALPHA, linewidth=0)
    elif spread == "seeds":
        for samples, values in curves:
            ax.plot(samples, values, color=color, linestyle=style, linewidth=SEED_LINEWIDTH,
                    alpha=SEED_ALPHA)


def _label_phases(ax, dataset_end: float) -> None:
    # Name the two sides of the dashed line at the top of the panel, in headroom kept free.
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.12 * (high - low))
    style = dict(xycoords=("data", "axes fraction"), textcoords="offset points", fontsize=6.5,
                 va="top", color="0.25",
                 bbox=dict(boxstyle="square,pad=0.15", facecolor="white", edgecolor="none",
                           alpha=0.85))
    ax.annotate("offline", (dataset_end, 0.98), xytext=(-3, 0), ha="right", **style)
    ax.annotate("online", (dataset_end, 0.98), xytext=(3, 0), ha="left", **style)


def _draw_prequential(ax, members: Sequence[Group], metric: str, styles: Styles) -> set[str]:
    """A panel of one prequential metric; returns how the spread over seeds was drawn."""
    ax.set_ylabel(metric.replace("_", " "))
    if not any(metric in p.metrics for g in members for p in g.prequential):
        ax.text(0.5, 0.5, "no prequential data", transform=ax.transAxes, ha="center",
                va="center", fontsize=7, alpha=0.6)
        ax.tick_params(labelleft=False, left=False)
        return set()
    positive = True
    spreads = set()
    means = []
    for group in members:
        curves = [p.metrics[metric] for p in group.prequential if metric in p.metrics]
        if not curves:
            continue
        color, style = styles[group.label]
        grid, mean, low, high = mean_curve(curves)
        ax.plot(grid, mean, linestyle=style, color=color)
        spread = spread_drawn(len(curves))
        spreads.add(spread)
        _draw_spread(ax, spread, grid, low, high, curves, color, style)
        positive = positive and bool(np.all(mean > 0))
        means.append(mean)
    if positive and means:
        values = np.concatenate(means)
        if values.max() > 10 * values.min():  # losses spanning decades read better on a log axis
            ax.set_yscale("log")
    return spreads - {None}


# ---------------------------------------------------------------------------------------------
# Aggregates and probability of improvement


def _interval_rows(ax, labels: Sequence[str], intervals: Sequence[stats.Interval],
                   colors: Sequence[str]) -> None:
    # One row per item, the layout of rliable's plots: a bar spanning the CI and a tick at the
    # point estimate; the first item on top.
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
                      out_stem: Path | str, styles: Styles) -> list[Path]:
    """IQM, median, mean and optimality gap with 95% CI bars: a row per measure (final score,
    AUC), a column per aggregate, a bar per method (keyed by method label)."""
    plt = _pyplot()
    methods = sorted(aggregates)
    measures = [m for m in stats.MEASURES if all(m in aggregates[x] for x in methods)]
    height = 0.25 * len(methods) + 0.75
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(len(measures), len(stats.AGGREGATES), squeeze=False,
                                 figsize=(2 * PAPER_PANEL_WIDTH, height * len(measures)),
                                 layout="constrained")
        colors = [styles[m][0] for m in methods]
        for r, measure in enumerate(measures):
            for c, name in enumerate(stats.AGGREGATES):
                ax = axes[r, c]
                _interval_rows(ax, methods, [aggregates[m][measure][name] for m in methods],
                               colors)
                if c:
                    ax.tick_params(labelleft=False)
                else:
                    ax.set_ylabel(stats.MEASURES[measure])
                if r == 0:
                    ax.set_title(stats.AGGREGATE_TITLES[name])
        return _save(fig, Path(out_stem))


def improvement_figure(improvement: Sequence[tuple[str, str, str, stats.Interval, int]],
                       out_stem: Path | str, styles: Styles) -> list[Path]:
    """P(X > Y) with 95% CI bars per pair of methods, a panel per measure; bars in X's colour."""
    plt = _pyplot()
    measures = [m for m in stats.MEASURES if any(row[2] == m for row in improvement)]
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
                           [styles[x][0] for x, _ in shown])
            ax.axvline(0.5, color="black", linestyle="--", linewidth=0.7, alpha=0.7)
            ax.set_xlim(0.0, 1.0)
            ax.set_xlabel("P(X > Y)")
            ax.set_title(stats.MEASURES[measure])
            if c:
                ax.tick_params(labelleft=False)
        return _save(fig, Path(out_stem))


# ---------------------------------------------------------------------------------------------
# Model selection: a criterion against the true score


@dataclasses.dataclass
class SelectionPanel:
    """One agent on one dataset: a point per configuration at (criterion, true score), means
    over seeds with their intervals; the criterion's pick and the best configuration marked."""

    title: str
    xlabel: str
    ylabel: str
    color: str
    x: np.ndarray
    x_low: np.ndarray
    x_high: np.ndarray
    y: np.ndarray
    y_low: np.ndarray
    y_high: np.ndarray
    picked: int  # index of the configuration the criterion ranks first
    best: int  # index of the configuration with the best true score
    text: str  # under the title (the correlation and regret)


def _error_span(center: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    # (2, n) distances for errorbar; none where the interval is undefined (one seed).
    return np.nan_to_num(np.stack([center - low, high - center]), nan=0.0).clip(min=0.0)


def selection_figure(rows: Sequence[Sequence[SelectionPanel | None]], out_stem: Path | str,
                     panel_width: float = 0.75 * PAPER_PANEL_WIDTH) -> list[Path]:
    """A grid of SelectionPanels (rows: agent x criterion, columns: datasets; None leaves a
    cell empty). Configurations whose criterion is not finite are not drawn (the panel says
    how many). Returns the PNG and PDF paths."""
    plt = _pyplot()
    columns = max(len(row) for row in rows)
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(len(rows), columns, squeeze=False,
                                 figsize=(panel_width * columns, 0.85 * panel_width * len(rows)
                                          + 0.4),
                                 layout="constrained")
        for r, row in enumerate(rows):
            for c in range(columns):
                ax = axes[r, c]
                panel = row[c] if c < len(row) else None
                if panel is None:
                    ax.set_axis_off()
                    continue
                _draw_selection(ax, panel)
        handles = [
            plt.Line2D([], [], linestyle="", marker="o", markersize=7, markerfacecolor="none",
                       markeredgecolor="black", label="picked by the criterion"),
            plt.Line2D([], [], linestyle="", marker="*", markersize=6, color="black",
                       label="best in the environment"),
        ]
        fig.legend(handles=handles, loc="outside lower center", frameon=False, ncol=2)
        return _save(fig, Path(out_stem))


def _draw_selection(ax, panel: SelectionPanel) -> None:
    finite = np.isfinite(panel.x)
    x, y = panel.x[finite], panel.y[finite]
    # Intervals faint (with three seeds they are wide), the means solid on top.
    ax.errorbar(x, y, xerr=_error_span(x, panel.x_low[finite], panel.x_high[finite]),
                yerr=_error_span(y, panel.y_low[finite], panel.y_high[finite]),
                linestyle="", color=panel.color, elinewidth=0.5, alpha=0.3)
    ax.plot(x, y, linestyle="", marker="o", markersize=3.5, color=panel.color)
    if finite[panel.picked]:
        ax.plot(panel.x[panel.picked], panel.y[panel.picked], linestyle="", marker="o",
                markersize=7, markerfacecolor="none", markeredgecolor="black",
                markeredgewidth=0.8)
    if finite[panel.best]:
        ax.plot(panel.x[panel.best], panel.y[panel.best], linestyle="", marker="*",
                markersize=6, color="black")
    if x.size and np.all(x > 0) and x.max() > 10 * x.min():  # spans decades: a log axis
        ax.set_xscale("log")
    text = panel.text
    if not finite.all():
        text += f", {int((~finite).sum())} not drawn (not finite)"
    # Above the axes, under the title: inside, it would cover points in some corner.
    ax.set_title(f"{panel.title}\n{text}", fontsize=7)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
