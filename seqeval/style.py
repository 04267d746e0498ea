"""One look for every figure: a colour per agent (and variant), a line style per mode, the axis
label of the samples axis, and paper sizes."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqeval.runs import Method

AGENT_COLORS: dict[str, str] = {
    "bc": "#7f7f7f",
    "td3_bc": "#1f77b4",
    "iql": "#2ca02c",
    "cql": "#d62728",
}
_EXTRA = ["#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
_MORE = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354"]


def agent_color(agent: str) -> str:
    """The colour of an agent: fixed for built-ins, stable (hash of the name) for others."""
    if agent in AGENT_COLORS:
        return AGENT_COLORS[agent]
    return _EXTRA[zlib.crc32(agent.encode()) % len(_EXTRA)]


# Method label -> (colour, line style): what every figure of one report draws with.
Styles = dict[str, tuple[str, str]]


def method_styles(methods: Iterable[Method]) -> Styles:
    """(colour, line style) per method label, for every figure of one report: a colour per
    agent and variant, kept across modes (an agent's first variant has the agent's colour, the
    others distinct spare colours), and a line style per mode."""
    methods = sorted(set(methods))
    colors: dict[str, str] = {}
    for method in methods:  # each agent's first variant: the agent's own colour when free
        if method.agent_name not in {m.agent_name for m in methods if m.name in colors}:
            color = agent_color(method.agent_name)
            if color not in colors.values():
                colors[method.name] = color
    spare = [c for c in (*_EXTRA, *_MORE, *AGENT_COLORS.values()) if c not in colors.values()]
    for method in methods:
        if method.name not in colors:
            colors[method.name] = spare.pop(0) if spare else "#000000"
    return {m.label: (colors[m.name], MODE_LINESTYLES.get(m.mode, "-")) for m in methods}


# The spread of a curve over seeds: a 95% Student-t band of the mean from 3 seeds on; below
# that the band is mostly the t quantile (12.7 at 2 seeds), wide enough to fill the panel and
# hide the curves, so each seed is drawn as a thin line instead. The legend says which.
MIN_SEEDS_FOR_BAND = 3
BAND_LEGEND = "shaded: 95% t interval of the mean"
SEEDS_LEGEND = f"thin: each seed (under {MIN_SEEDS_FOR_BAND} seeds)"

# Line style per protocol mode, so an agent keeps its colour across modes.
MODE_LINESTYLES: dict[str, str] = {"sequential": "-", "full": "--", "retrain": ":"}
# What the samples axis counts, in every figure: the buffer the agent trains from, the initial
# T0 transitions included; in the online phase, the dataset plus the environment steps taken.
SAMPLES_LABEL = "transitions in the buffer (T0 included)"

# Paper figures: sized in inches for a column (~3.3 in per panel) and drawn with fonts that stay
# >= 7 pt when the figure is placed at that width without scaling.
PAPER_PANEL_WIDTH = 3.3
PAPER_RC: dict[str, object] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "grid.linewidth": 0.4,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by paper submission systems
}
