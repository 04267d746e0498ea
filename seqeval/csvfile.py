"""The one CSV writer: run logs (seqeval.results), a study's runs tables, and the tables of
`seqeval report` and `seqeval select` all format their cells and lines here."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqeval.fileio import write_text_atomic


def csv_cell(value: Any) -> str:
    """A cell: floats to 6 significant digits, None and non-finite floats empty, a list or
    tuple as its cells joined by commas."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(csv_cell(v) for v in value)
    if isinstance(value, float | np.floating):
        return "" if not np.isfinite(value) else f"{float(value):.6g}"
    return str(value)


def csv_text(header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    """CSV lines of `rows` (cells formatted by `csv_cell`), after `header` unless it is None."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # "\r\n" line ends, the csv module's default
    if header is not None:
        writer.writerow(header)
    for row in rows:
        writer.writerow([csv_cell(value) for value in row])
    return buffer.getvalue()


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A whole CSV table, replaced atomically."""
    write_text_atomic(path, csv_text(header, rows))
