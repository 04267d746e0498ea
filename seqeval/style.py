"""One look for every figure: a fixed colour per agent, used by all plots."""

from __future__ import annotations

import zlib

AGENT_COLORS: dict[str, str] = {
    "bc": "#7f7f7f",
    "td3_bc": "#1f77b4",
    "iql": "#2ca02c",
    "cql": "#d62728",
}
_EXTRA = ["#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def agent_color(agent: str) -> str:
    """The colour of an agent: fixed for built-ins, stable (hash of the name) for others."""
    if agent in AGENT_COLORS:
        return AGENT_COLORS[agent]
    return _EXTRA[zlib.crc32(agent.encode()) % len(_EXTRA)]

# Line style per protocol mode, so an agent keeps its colour across modes.
MODE_LINESTYLES: dict[str, str] = {"sequential": "-", "full": "--", "retrain": ":"}

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
