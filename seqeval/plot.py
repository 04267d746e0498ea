"""Data-efficiency curves: normalized score against samples, one line per agent."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from seqeval.errors import UserError
from seqeval.results import read_evaluations
from seqeval.style import MODE_LINESTYLES, agent_color


def load_run(run_dir: Path | str) -> tuple[dict, list[dict]]:
    """(config, evaluation rows) of a run directory; UserError when it is not one."""
    path = Path(run_dir)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UserError(f"'{path}' is not a seqeval run directory (no config.json)")
    return json.loads(config_path.read_text()), read_evaluations(path)


def agent_label(config: dict) -> str:
    """Display name of a run's agent (a file path agent shows as its attribute name)."""
    name = config["agent"]
    return name.rpartition(":")[2] if ":" in name else name


def curve(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(samples, mean, std, seeds) over seeds at each sample position present for every seed."""
    by_samples: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if row[key] is not None:
            by_samples[row["samples"]].append(row[key])
    samples = np.array(sorted(by_samples))
    values = [np.asarray(by_samples[s]) for s in samples]
    mean = np.array([v.mean() for v in values])
    std = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
    seeds = max((len(v) for v in values), default=0)
    return samples, mean, std, seeds


def plot_runs(run_dirs: list[str], out: Path | str, title: str | None = None) -> list[Path]:
    """Draw the runs' curves into `out` (PNG) and its PDF twin; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise UserError("no run directories given; pass one or more RUN_DIR")
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    infos = {}
    for run_dir in run_dirs:
        config, rows = load_run(run_dir)
        if not rows:
            raise UserError(f"'{run_dir}' has no evaluations yet; run it first")
        key = (agent_label(config), config["dataset"], config.get("mode", "sequential"))
        groups[key].extend(rows)
        infos[config["dataset"]] = config["dataset_info"]
    normalized = all(
        row["normalized_score"] is not None for rows in groups.values() for row in rows
    )
    value_key = "normalized_score" if normalized else "return"
    several_datasets = len(infos) > 1

    fig, ax = plt.subplots(figsize=(6.0, 3.8), dpi=150)
    for (agent, dataset, mode), rows in sorted(groups.items()):
        samples, mean, std, seeds = curve(rows, value_key)
        label = agent + (f" ({mode})" if mode != "sequential" else "")
        label += f" [{dataset}]" if several_datasets else ""
        label += f", {seeds} seeds" if seeds > 1 else ""
        color = agent_color(agent)
        marker = "o" if mode == "retrain" else None
        ax.plot(samples, mean, MODE_LINESTYLES.get(mode, "-"), color=color, label=label,
                marker=marker, markersize=3, linewidth=1.5)
        if seeds > 1:
            ax.fill_between(samples, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        online = [r["samples"] for r in rows if r["phase"] == "online"]
        if online:
            ax.axvline(infos[dataset]["transitions"], color="black", linestyle="--",
                       linewidth=0.8)
    for dataset, info in infos.items():
        level = info.get("average_normalized_return") if normalized else info.get(
            "average_return")
        if level is not None:
            ax.axhline(level, color="black", linestyle="--", linewidth=0.8, alpha=0.6)
            ax.annotate(f"dataset average{f' ({dataset})' if several_datasets else ''}",
                        (ax.get_xlim()[0], level), fontsize=7, alpha=0.7,
                        xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("samples (transitions added)")
    ax.set_ylabel("normalized score" if normalized else "return")
    ax.set_title(title or (", ".join(infos) if len(infos) <= 2 else "data efficiency"),
                 fontsize=10)
    ax.grid(alpha=0.3)
    if any(len({r["seed"] for r in rows}) > 1 for rows in groups.values()):
        ax.text(0.99, 0.01, "band: ±1 std over seeds", transform=ax.transAxes, fontsize=7,
                ha="right", va="bottom", alpha=0.7)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = out.with_suffix(".png"), out.with_suffix(".pdf")
    fig.savefig(png)
    fig.savefig(pdf)
    plt.close(fig)
    return [png, pdf]
