"""A run directory: config, results as they are produced, and checkpoints to resume from.

    RUN_DIR/config.json         what was run (written once; a resumed run must match it)
    RUN_DIR/evaluations.csv     one row per seed and evaluation, appended and flushed at once
    RUN_DIR/training.csv        mean training metrics per seed and chunk
    RUN_DIR/prequential.csv     losses on each chunk before training on it (sequential mode)
    RUN_DIR/summary.json        replaced atomically after every evaluation
    RUN_DIR/checkpoint/         agent states and keys after the last evaluation (atomic)
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from seqeval.errors import UserError
from seqeval.fileio import write_json_atomic, write_npz_atomic

EVALUATION_COLUMNS = (
    "samples", "gradient_steps", "seed", "return", "normalized_score", "wall_time", "phase",
)


class CsvLog:
    """An append-only CSV whose rows reach the disk as soon as they are written."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = list(columns)
        if self.exists():  # an existing file keeps its own columns (e.g. a resumed run)
            with open(self.path, newline="") as handle:
                header = next(csv.reader(handle), None)
            if header:
                self.columns = header

    def exists(self) -> bool:
        return self.path.is_file()

    def rows(self) -> list[dict[str, str]]:
        if not self.exists():
            return []
        with open(self.path, newline="") as handle:
            return list(csv.DictReader(handle))

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        new_file = not self.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            for row in rows:
                writer.writerow({k: _format(row.get(k)) for k in self.columns})
            handle.flush()
            os.fsync(handle.fileno())

    def keep_rows(self, keep) -> None:
        """Rewrite the file keeping only rows for which `keep(row)` is true (atomic)."""
        kept = [row for row in self.rows() if keep(row)]
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return "" if not np.isfinite(value) else f"{float(value):.6g}"
    return str(value)


class RunDir:
    """Files of one run. Creating it over an existing run of a different config is refused."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.evaluations = CsvLog(self.path / "evaluations.csv", EVALUATION_COLUMNS)
        self.checkpoint_dir = self.path / "checkpoint"

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def read_config(self) -> dict | None:
        if not self.config_path.is_file():
            return None
        return json.loads(self.config_path.read_text())

    def open(self, config: dict) -> bool:
        """Prepare the directory for `config`; True when it holds a run to resume."""
        existing = self.read_config()
        if existing is not None:
            if existing != json.loads(json.dumps(config)):
                raise UserError(
                    f"'{self.path}' holds a run with a different config; choose another --out "
                    "or delete it"
                )
            return True
        if self.path.exists() and any(self.path.iterdir()):
            raise UserError(f"'{self.path}' exists and is not a seqeval run; choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.config_path, config)
        return False

    def training_log(self, metric_names: Sequence[str]) -> CsvLog:
        """Mean training metrics per chunk and seed."""
        columns = ["samples", "gradient_steps", "seed", "phase", *metric_names]
        return CsvLog(self.path / "training.csv", columns)

    def prequential_log(self) -> CsvLog:
        """Prequential losses: each chunk scored before training on it (columns fixed on the
        first write: samples, seed, transitions, then METRIC and METRIC_cumulative pairs)."""
        return CsvLog(self.path / "prequential.csv", ["samples", "seed", "transitions"])

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.path / "summary.json", summary)

    # Checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self, tree: Any, progress: dict) -> None:
        """Save a pytree of arrays and the progress it corresponds to, atomically.

        The arrays go first; the progress file, written last, is what makes them current.
        """
        self.checkpoint_dir.mkdir(exist_ok=True)
        leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]
        step = int(progress["segment"])
        arrays_path = self.checkpoint_dir / f"state-{step:06d}.npz"
        write_npz_atomic(arrays_path, {f"leaf_{i:04d}": v for i, v in enumerate(leaves)})
        write_json_atomic(self.checkpoint_dir / "progress.json",
                          {**progress, "arrays": arrays_path.name})
        for old in self.checkpoint_dir.glob("state-*.npz"):
            if old.name != arrays_path.name:
                old.unlink(missing_ok=True)

    def load_checkpoint(self, like: Any) -> tuple[Any, dict] | None:
        """(tree shaped like `like`, progress) of the last checkpoint, or None."""
        progress_path = self.checkpoint_dir / "progress.json"
        if not progress_path.is_file():
            return None
        progress = json.loads(progress_path.read_text())
        with np.load(self.checkpoint_dir / progress["arrays"]) as stored:
            leaves = [stored[f"leaf_{i:04d}"] for i in range(len(stored.files))]
        treedef = jax.tree.structure(like)
        if treedef.num_leaves != len(leaves):
            raise UserError(
                f"checkpoint in '{self.checkpoint_dir}' does not fit this agent; delete the run"
            )
        like_leaves = jax.tree.leaves(like)
        leaves = [np.asarray(v, dtype=np.asarray(x).dtype) for v, x in zip(leaves, like_leaves,
                                                                           strict=True)]
        return jax.tree.unflatten(treedef, leaves), progress


def read_evaluations(run_dir: Path | str) -> list[dict[str, Any]]:
    """Evaluation rows of a run with numbers parsed (empty strings become None)."""
    rows = CsvLog(Path(run_dir) / "evaluations.csv", EVALUATION_COLUMNS).rows()
    parsed = []
    for row in rows:
        item: dict[str, Any] = {}
        for key, value in row.items():
            if key == "phase":
                item[key] = value
            elif value in ("", None):
                item[key] = None
            else:
                item[key] = float(value) if key not in ("samples", "gradient_steps", "seed") \
                    else int(float(value))
        parsed.append(item)
    return parsed


# Readers for analysis (seqeval.runs). Added by the plots helper as a minimal stand-in until the
# engine's strict reader lands; it may replace these with the same names and return shapes.
PREQUENTIAL_KEYS = ("samples", "seed", "transitions", "gradient_steps", "phase", "wall_time")
CUMULATIVE_SUFFIX = "_cumulative"  # METRIC_cumulative: the running sum of METRIC's losses


def _read_numbers(path: Path, text_columns: Sequence[str] = ("phase",)) -> list[dict[str, Any]]:
    """Rows of a results CSV, every column but `text_columns` parsed as a number (empty: None);
    UserError naming the file and row on anything else."""
    try:
        rows = CsvLog(path, ()).rows()
    except (csv.Error, UnicodeDecodeError) as error:
        raise UserError(f"'{path}' is not a readable CSV ({error}); repair or delete it") from None
    parsed = []
    for number, row in enumerate(rows, start=1):
        try:
            if None in row or None in row.values():
                raise ValueError("wrong number of fields")
            parsed.append({k: v if k in text_columns else (None if v == "" else float(v))
                           for k, v in row.items()})
        except ValueError as error:
            raise UserError(f"'{path}' row {number} is not valid ({error}); repair or delete "
                            "that row") from None
    return parsed


def read_prequential(run_dir: Path | str) -> list[dict[str, Any]]:
    """prequential.csv rows: samples (chunk start), seed, transitions, METRIC and
    METRIC_cumulative values as floats (None where empty); [] when the run has none."""
    return _read_numbers(Path(run_dir) / "prequential.csv")


def read_training(run_dir: Path | str) -> list[dict[str, Any]]:
    """training.csv rows: samples, gradient_steps, seed, phase, then mean training metrics."""
    return _read_numbers(Path(run_dir) / "training.csv")
