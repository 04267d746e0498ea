"""`seqeval plot RUN_DIR... [--out PATH]`: the data-efficiency curves of runs, drawn by the
report's figure code (seqeval.figures.curves_figure) from runs grouped by seqeval.runs."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from seqeval.errors import UserError
from seqeval.runs import load_groups

FIGURE_NAME = "curve.png"  # in the first run directory, or in an --out directory


def figure_stem(out: str | Path | None, first_run: str | Path) -> Path:
    """Where the figure goes, without its suffix: --out PATH[.png|.pdf] (a PDF beside the PNG),
    --out DIR (an existing directory, or a path ending in '/') as DIR/curve, or by default
    RUN_DIR/curve in the first run directory."""
    if out is None:
        return Path(first_run) / Path(FIGURE_NAME).stem
    text = str(out)
    path = Path(text)
    if path.is_dir() or text.endswith(("/", "\\")):
        return path / Path(FIGURE_NAME).stem
    if path.exists() and not path.is_file():
        raise UserError(f"--out '{path}' is neither a file nor a directory; pass a PNG path")
    return path.with_suffix("") if path.suffix.lower() in (".png", ".pdf") else path


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None,
              title: str | None = None, prequential: bool = False) -> list[Path]:
    """Draw the runs' curves; returns the PNG and PDF paths. Notes (a run given twice, raw
    returns) go to stderr."""
    from seqeval.figures import curves_figure

    groups, notes = load_groups(run_dirs)
    for note in notes:
        print(f"seqeval: note: {note}", file=sys.stderr)
    return curves_figure(groups, figure_stem(out, run_dirs[0]), prequential=prequential,
                         title=title)
