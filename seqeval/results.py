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
import dataclasses
import json
import math
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


# Readers for analysis (seqeval.runs): a minimal stand-in, added by the plots helper, with the
# names and return types of the engine's strict readers (PrequentialRow, read_prequential,
# read_training), which replace it on merge.
PREQUENTIAL_KEYS = ("samples", "seed", "transitions")  # then METRIC, METRIC_cumulative pairs
CUMULATIVE = "_cumulative"


@dataclasses.dataclass(frozen=True)
class PrequentialRow:
    """One seed's losses on one chunk, scored before training on it: `losses[m]` the mean of m
    per transition of the chunk, `cumulative[m]` the running sum over the seed's chunks."""

    samples: int  # transitions in the buffer before the chunk (the chunk's first position)
    seed: int
    transitions: int  # transitions in the chunk
    losses: dict[str, float | None]
    cumulative: dict[str, float | None]


def _numbers(path: Path) -> list[dict[str, Any]]:
    # Rows with every column but phase parsed as a finite number (empty: None); UserError naming
    # the file and row otherwise.
    try:
        rows = CsvLog(path, ()).rows()
    except (csv.Error, UnicodeDecodeError) as error:
        raise UserError(f"'{path}' is not a readable CSV ({error}); repair or delete it") from None
    parsed = []
    for number, row in enumerate(rows, start=1):
        try:
            if None in row or None in row.values():
                raise ValueError("wrong number of fields")
            item = {k: v if k == "phase" else (None if v == "" else float(v))
                    for k, v in row.items()}
            if not all(math.isfinite(v) for k, v in item.items() if k != "phase" and v is not None):
                raise ValueError("a value is not finite")
        except ValueError as error:
            raise UserError(f"'{path}' row {number} is not valid ({error}); repair or delete "
                            "that row") from None
        parsed.append(item)
    return parsed


def read_prequential(run_dir: Path | str) -> list[PrequentialRow]:
    """Rows of RUN_DIR/prequential.csv in file order ([] without one)."""
    path = Path(run_dir) / "prequential.csv"
    rows = _numbers(path)
    parsed = []
    for number, row in enumerate(rows, start=1):
        names = [k for k in row if k not in PREQUENTIAL_KEYS and not k.endswith(CUMULATIVE)]
        if any(row.get(k) is None for k in PREQUENTIAL_KEYS):
            raise UserError(f"'{path}' row {number} lacks samples, seed or transitions; repair "
                            "or delete that row")
        parsed.append(PrequentialRow(
            samples=int(row["samples"]), seed=int(row["seed"]),
            transitions=int(row["transitions"]), losses={n: row[n] for n in names},
            cumulative={n: row.get(n + CUMULATIVE) for n in names}))
    return parsed


def read_training(run_dir: Path | str) -> list[dict[str, Any]]:
    """Training rows: samples, gradient_steps, seed, phase, then each metric's mean."""
    return _numbers(Path(run_dir) / "training.csv")
