"""Table cells as `seqeval report` and `seqeval select` write them: numbers with their
confidence intervals, an interval's CSV cells, and GitHub markdown tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

from seqeval import stats


def with_ci(interval: stats.Interval, digits: int = 1, kind: str = "f") -> str:
    """`point [low, high]` for a table ("n/a" when undefined; no bounds when they are)."""
    if not math.isfinite(interval.point):
        return "n/a"
    text = f"{interval.point:.{digits}{kind}}"
    if math.isfinite(interval.low) and math.isfinite(interval.high):
        text += f" [{interval.low:.{digits}{kind}}, {interval.high:.{digits}{kind}}]"
    return text


def interval_cells(interval: stats.Interval) -> list[float]:
    """An interval's three CSV cells: point, low, high."""
    return [interval.point, interval.low, interval.high]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines
