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
